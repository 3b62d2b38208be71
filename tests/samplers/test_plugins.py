"""Backends registered by packages above samplers: `samplers` alone never imports `training`;
the MNIST backend appears once the plugins load (as `python -m samplers --backend mnist` does)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_samplers_alone_does_not_import_training():
    out = _run("import sys, samplers, samplers.backends as b, samplers.tasks; "
               "print('training' in sys.modules, sorted(b.BACKENDS))")
    assert out == "False ['deepfloyd']"


def test_plugins_register_the_mnist_backend():
    out = _run("import sys, samplers.backends as b; print(b.available_backends(), "
               "'training' in sys.modules, b.BACKENDS['mnist'])")
    assert out == "['deepfloyd', 'mnist'] True training.backend:MnistBackend"
