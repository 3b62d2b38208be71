"""AppTest of the Sampler lab on DeepFloyd IF: the tiny offline pipeline, named by environment."""

import pytest

from .conftest import no_errors


@pytest.fixture(scope="module")
def tiny_if(tmp_path_factory):
    from tests.fixtures.tiny_if import build_tiny_if

    return build_tiny_if(tmp_path_factory.mktemp("tiny-if"))


def test_deepfloyd_forward_process(app, lab_runs, tiny_if, tmp_path):
    at = app(
        lab_runs,
        DIFFUSION_LAB_IF_MODEL=str(tiny_if.stage1),
        DIFFUSION_LAB_IF_STAGE2=str(tiny_if.stage2),
        DIFFUSION_LAB_CACHE=str(tmp_path / "cache"),
    ).run()
    at.switch_page("screens/sampler_lab.py").run()
    at.radio(key="lab_backend").set_value("DeepFloyd IF").run()
    no_errors(at)
    assert at.success[0].value.startswith("Backend: DeepFloyd IF")
    at.button(key="fwd_go").click().run()
    no_errors(at)
    assert any("original · t=250 · t=500 · t=750" in c for img in at.image for c in img.captions)
