"""Shared pytest set-up: every test runs offline, on CPU, with W&B kept local, on one torch thread.

One thread (and OMP_NUM_THREADS=1 for child processes): two xdist workers with two threads each on
the 2-core CI machine oversubscribe it and make small models up to 10x slower; one thread also keeps
runs compared bit for bit across processes on the same reduction order.
"""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402  (after the environment above)

torch.set_num_threads(1)


@pytest.fixture
def mnist_offline(monkeypatch):
    """Full MNIST unreachable, as torchvision fails without a network, on any machine."""
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped, with that reason, where no CUDA device is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a visible CUDA device (the suite hides GPUs unless "
        "CUDA_VISIBLE_DEVICES is set; make gpu-check sets it)"
    )
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def stand_in():
    """stand_in() -> the identity (training.runlock.Process) of a new live process, a sleeping
    child that stands in for a training process; every one is killed when the test ends."""
    import subprocess
    import sys

    from training.runlock import process_identity

    children = []

    def make():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        children.append(child)
        return process_identity(child.pid)

    yield make
    for child in children:
        child.kill()
        child.wait()
