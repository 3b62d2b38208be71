"""Training throughput: the lab's trainer and fast-path candidates against a course-style loop.

The reference is what course notebooks do: torchvision's ``MNIST`` with a per-item ``ToTensor``, a
``DataLoader``, fp32 eager, the same UNet, batch, optimizer and objective. The lab figures are
(a) the real ``training.trainer.Trainer`` (its own logged images/s over a fresh run of k steps)
and (b) ``LabStep``: the trainer's step rebuilt from the lab's parts (device-resident uint8
batches, the lab objective), where each fast-path setting can be switched on.
"""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from training.config import TrainConfig, make_config
from training.data import Batches, Digits, derive_seed, load_dataset
from training.objectives import make_objective
from training.pretrained import build_unet, vp_alphas_cumprod
from training.trainer import Trainer

from .fastpath import FastPath, applied, as_input, prepare
from .peak import count_flops
from .report import Row
from .timing import Work, interleaved

EXPERIMENTS = ("ddpm-class", "flow-class")
SECTION = "training (images/s; ratio vs reference loop)"


@dataclass(frozen=True)
class TrainSizes:
    steps: int = 2        # optimizer steps per timed unit
    repeats: int = 5      # timed units per variant (median reported)
    warmup: int = 1       # untimed units first
    hidden: int = 64      # UNet D
    batch: int | None = None  # None: the experiment's course batch (DDPM 128, flow 64)


def experiment_config(experiment: str, sizes: TrainSizes, device: torch.device, **kw) -> TrainConfig:
    """The course config of `experiment` on mnist-5k at the benchmark's width and batch."""
    over = dict(dataset="mnist-5k", hidden=sizes.hidden, batch_size=sizes.batch,
                device=device.type, wandb_mode="disabled", **kw)
    return make_config(experiment, **over)


# ----------------------------------------------------------------------------- reference loop
def _write_idx(path: Path, array: torch.Tensor, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def torchvision_mnist(digits: Digits, root: Path):
    """torchvision's ``MNIST(train=True, transform=ToTensor())`` over `digits` (written as idx files)."""
    from torchvision import datasets, transforms

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    images, labels = digits.images[:, 0].contiguous(), digits.labels.to(torch.uint8)
    for split in ("train", "t10k"):
        _write_idx(raw / f"{split}-images-idx3-ubyte", images, 0x803)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels, 0x801)
    return datasets.MNIST(str(root), train=True, transform=transforms.ToTensor(), download=False)


class ReferenceLoop:
    """A course notebook's training step: DataLoader batch -> noise -> loss -> Adam, fp32 eager."""

    def __init__(self, cfg: TrainConfig, dataset, device: torch.device):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.model = build_unet(cfg).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True,
                                                  drop_last=True)
        self.batches: Iterator = itertools.chain.from_iterable(itertools.repeat(self.loader))
        self.ab = vp_alphas_cumprod(cfg).to(device)

    def step(self) -> None:
        x, y = next(self.batches)
        x = x.to(self.device) * 2 - 1
        c = F.one_hot(y.to(self.device), 10).float()
        c = c * (torch.rand(len(y), device=self.device) >= self.cfg.p_uncond)[:, None].float()
        noise = torch.randn_like(x)
        if self.cfg.kind == "ddpm":
            i = torch.randint(0, len(self.ab), (len(y),), device=self.device)
            ab = self.ab[i].view(-1, 1, 1, 1)
            pred = self.model(ab.sqrt() * x + (1 - ab).sqrt() * noise, (i + 1).float() / len(self.ab), c)
            loss = F.mse_loss(pred, noise)
        else:
            t = torch.rand(len(y), device=self.device)
            tt = t.view(-1, 1, 1, 1)
            loss = F.mse_loss(self.model((1 - tt) * noise + tt * x, t, c), x - noise)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()


# ----------------------------------------------------------------------------- the lab
class LabStep:
    """`training.trainer.Trainer`'s step (batch by index, lab objective, Adam) with a FastPath."""

    def __init__(self, cfg: TrainConfig, digits: Digits, device: torch.device, fp: FastPath):
        self.cfg, self.device, self.fp = cfg, device, fp
        self.batches = Batches(digits, cfg.batch_size, seed=cfg.seed, device=device)
        torch.manual_seed(cfg.seed)
        net = build_unet(cfg).to(device)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        self.model = prepare(net, fp)
        self.objective = make_objective(cfg, vp_alphas_cumprod(cfg).to(device))
        self.generator = torch.Generator(device)
        self.index = 0

    def step(self) -> None:
        x, y = self.batches.batch(self.index)
        c = F.one_hot(y, self.cfg.num_classes).to(x.dtype)
        self.generator.manual_seed(derive_seed(self.cfg.seed, "noise", self.index, 0))
        with applied(self.fp, self.device):
            losses, _ = self.objective(self.model, as_input(x, self.fp), c, self.generator)
        losses.mean().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.index += 1


def trainer_work(cfg: TrainConfig, runs_dir: Path) -> Work:
    """A fresh `Trainer` run of cfg.steps steps per call; returns the seconds its own log implies.

    The run logs once, at its last step, so its images_per_s covers every step and excludes the
    end-of-run preview and checkpoint.
    """
    counter = itertools.count()

    def run() -> float:
        name = f"{cfg.experiment}-{next(counter)}"
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
            run_dir = Trainer(make_config(cfg.experiment, **{**_overrides(cfg), "name": name}), runs_dir).run()
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        return cfg.steps * cfg.batch_size / last["images_per_s"]

    return run


def _overrides(cfg: TrainConfig) -> dict:
    keys = ("dataset", "hidden", "batch_size", "device", "wandb_mode", "steps", "log_every", "preview_steps")
    return {k: getattr(cfg, k) for k in keys}


def _repeat(fn, n: int) -> Work:
    def run() -> None:
        for _ in range(n):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    return run


def training_rows(sizes: TrainSizes, device: torch.device, variants: Sequence[FastPath],
                  *, peak_fp32: float | None = None, experiments: Sequence[str] = EXPERIMENTS) -> list[Row]:
    """Rows for each experiment: reference, lab trainer, then `variants` of LabStep."""
    digits = load_dataset("mnist-5k", split="train")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        dataset = torchvision_mnist(digits, Path(tmp) / "data")
        for exp in experiments:
            cfg = experiment_config(exp, sizes, device, steps=sizes.steps, log_every=10 ** 6, preview_steps=1)
            ref = ReferenceLoop(cfg, dataset, device)
            labs = {fp: LabStep(cfg, digits, device, fp) for fp in variants}
            flops = count_flops(LabStep(cfg, digits, device, FastPath()).step)
            works = {"reference": _repeat(ref.step, sizes.steps),
                     "trainer": trainer_work(cfg, Path(tmp) / "runs"),
                     **{fp.label: _repeat(lab.step, sizes.steps) for fp, lab in labs.items()}}
            timings = interleaved(works, repeats=sizes.repeats, warmup=sizes.warmup)
            base = timings["reference"].median
            names = {"reference": "reference loop (torchvision MNIST+ToTensor, DataLoader, fp32)",
                     "trainer": "lab Trainer as configured (its logged images/s)",
                     **{fp.label: f"lab step, {fp.label}" for fp in variants}}
            for key, t in timings.items():
                gflops = flops * sizes.steps / t.median / 1e9
                note = f"{gflops:.1f} GFLOP/s" + (f" = {100 * gflops / peak_fp32:.0f}% of fp32 peak"
                                                  if peak_fp32 else "") + f"; spread {t.spread:.0%}"
                rows.append(Row(SECTION, f"{exp} B={cfg.batch_size}: {names[key]}",
                                cfg.batch_size * sizes.steps / t.median, "img/s", base / t.median, note))
    return rows
