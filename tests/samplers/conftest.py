"""Fixtures for the DeepFloyd backend, image I/O and CLI tests: a tiny IF pair built once per
session (about a second), a fresh embedding cache per test, and a real local HTTP server to
stand in for the Hugging Face hub."""

from __future__ import annotations

import http.server
import threading

import pytest

from samplers.app.backends import load_backend
from tests.fixtures.tiny_if import TinyIF, build_tiny_if


@pytest.fixture(scope="session")
def tiny_if(tmp_path_factory) -> TinyIF:
    """Stage 1 (32 px, T5 width 32) and stage 2 (64 px) saved with save_pretrained."""
    return build_tiny_if(tmp_path_factory.mktemp("tiny-if"))


@pytest.fixture(autouse=True)
def embedding_cache(tmp_path, monkeypatch):
    """Every test gets its own, empty prompt-embedding cache (never ~/.cache)."""
    folder = tmp_path / "lab-cache"
    monkeypatch.setenv("DIFFUSION_LAB_CACHE", str(folder))
    return folder / "prompt-embeds"


@pytest.fixture
def if_backend(tiny_if):
    """The tiny IF loaded through the lab's own loader, on the CPU in float32."""
    return load_backend(
        "deepfloyd", model=str(tiny_if.stage1), stage2=str(tiny_if.stage2), device="cpu"
    )


@pytest.fixture
def fake_hub(monkeypatch):
    """Start a local server as HF_ENDPOINT with hub access allowed; call it with a handler
    behaviour: "gated" answers 401 GatedRepo, "hang" accepts and never answers."""
    import huggingface_hub.constants

    servers = []

    def start(behaviour: str) -> str:
        release = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802 - http.server's naming
                if behaviour == "hang":
                    release.wait(30)
                    return
                self.send_response(401)
                self.send_header("X-Error-Code", "GatedRepo")
                self.send_header("X-Error-Message", "Access to this model is restricted.")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        servers.append((server, release))
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        return url

    yield start
    for server, release in servers:
        release.set()
        server.shutdown()
        server.server_close()
