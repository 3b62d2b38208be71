"""Backends come from entry points: `samplers` alone never imports `training`, and listing the
backends (as `python -m samplers --help` does) imports none of them."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_listing_backends_imports_none_of_them():
    out = _run(
        "import sys, samplers, samplers.app.backends as b, samplers.app.tasks; "
        "print(b.available_backends(), 'training' in sys.modules, "
        "'samplers.app.backends.deepfloyd' in sys.modules)"
    )
    assert out == "['deepfloyd', 'mnist'] False False"


def test_the_mnist_backend_is_the_training_package_entry_point():
    out = _run(
        "import samplers.app.backends as b; t = b.backend_targets(); "
        "print(t['mnist'], t['deepfloyd'])"
    )
    assert out.split() == [
        "training.backend:MnistBackend",
        "samplers.app.backends.deepfloyd:DeepFloydBackend.from_pretrained",
    ]
