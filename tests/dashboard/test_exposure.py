"""The dashboard served beyond this machine says so on every page and starts or stops nothing."""

import shutil

import pytest
import streamlit

from dashboard.settings import is_loopback

from .conftest import no_errors

PAGES = ("screens/train.py", "screens/studio.py", "screens/sampler_lab.py")


@pytest.mark.parametrize(
    "address, loopback",
    [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.1.1", True)]
    + [("", False), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("lab", False)],
)
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback


def served_on(monkeypatch, address: str) -> None:
    """Fake the server.address option the app reads (as `streamlit run` would set it)."""
    real = streamlit.get_option
    monkeypatch.setattr(
        streamlit, "get_option", lambda key: address if key == "server.address" else real(key)
    )


def test_an_exposed_server_refuses_to_start_or_stop(app, lab_runs, tmp_path, monkeypatch):
    shutil.copytree(lab_runs / "flow-class", tmp_path / "flow-class")
    served_on(monkeypatch, "0.0.0.0")
    at = app(tmp_path).run()
    assert "listens on 0.0.0.0" in at.warning[0].value
    assert "DIFFUSION_LAB_ALLOW_REMOTE=1" in at.warning[0].value
    assert at.button(key="runs_eval_start").disabled
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception
        assert "listens on 0.0.0.0" in at.warning[0].value  # at the top of every page
    at.switch_page("screens/train.py").run()
    assert at.button(key="train_start").disabled and at.button(key="train_eval_start").disabled
    served_on(monkeypatch, "")  # no address given: every interface
    at.run()
    assert "listens on every network interface" in at.warning[0].value


def test_the_documented_opt_in_and_loopback_allow_it(app, lab_runs, tmp_path, monkeypatch):
    shutil.copytree(lab_runs / "flow-class", tmp_path / "flow-class")
    served_on(monkeypatch, "0.0.0.0")
    at = app(tmp_path, DIFFUSION_LAB_ALLOW_REMOTE="1").run()
    at.switch_page("screens/train.py").run()
    no_errors(at)
    assert not at.warning and not at.button(key="train_start").disabled
    served_on(monkeypatch, "127.0.0.1")
    monkeypatch.delenv("DIFFUSION_LAB_ALLOW_REMOTE")
    at.run()
    assert not at.warning and not at.button(key="train_eval_start").disabled
