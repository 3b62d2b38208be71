"""Shared pytest set-up: every test runs offline, on CPU, with W&B kept local.

Under pytest-xdist each worker gets one torch thread: two workers with two threads each on the
2-core CI machine oversubscribe it and make small models up to 10x slower.
"""
import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
