"""Training throughput: the lab's trainer and fast-path candidates against a course-style loop.

The reference is what course notebooks do: torchvision's ``MNIST`` with a per-item ``ToTensor``, a
``DataLoader``, fp32 eager, the same UNet, batch, optimizer and objective. The lab figures are
(a) the real ``training.trainer.Trainer`` (its own logged images/s over a fresh run of k steps),
(b) ``LabStep``: the trainer's step rebuilt from the lab's parts (device-resident uint8
batches, the lab objective), where each fast-path setting can be switched on, and (c) ``BareStep``:
the least a step can do (one random batch kept in memory, forward, MSE, backward, Adam), the
ceiling the trainer's per-step extras (batching, noise, class dropout, EMA, loss bins) are read
against.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from samplers.app.devices import resolve_mixed_precision
from training.checkpoints import latest_checkpoint
from training.config import TrainOptions, make_options, start_plan
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
PREVIEW = "preview share of a run (grids + GIF, 50-step sampler)"


@dataclass(frozen=True)
class TrainSizes:
    steps: int = 2  # optimizer steps per timed unit
    repeats: int = 5  # timed units per variant (median reported)
    warmup: int = 1  # untimed units first
    hidden: int = 64  # UNet D
    batch: int | None = None  # None: the experiment's course batch (DDPM 128, flow 64)


def experiment_config(
    experiment: str, sizes: TrainSizes, device: torch.device, **kw
) -> TrainOptions:
    """The course config of `experiment` on mnist-5k at the benchmark's width and batch."""
    over = dict(
        dataset="mnist-5k",
        hidden=sizes.hidden,
        batch_size=sizes.batch,
        device=device.type,
        wandb_mode="disabled",
        **kw,
    )
    return make_options(experiment, **over)


# ----------------------------------------------------------------------------- reference loop
def _write_idx(path: Path, array: torch.Tensor, magic: int) -> None:
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def torchvision_mnist(digits: Digits, root: Path):
    """torchvision's ``MNIST(train=True, transform=ToTensor())`` over `digits` (written as idx
    files)."""
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

    def __init__(self, cfg: TrainOptions, dataset, device: torch.device):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)
        self.model = build_unet(cfg).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True
        )
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
            pred = self.model(
                ab.sqrt() * x + (1 - ab).sqrt() * noise, (i + 1).float() / len(self.ab), c
            )
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

    def __init__(self, cfg: TrainOptions, digits: Digits, device: torch.device, fp: FastPath):
        self.cfg, self.device, self.fp = cfg, device, fp
        self.batches = Batches(digits, cfg.batch_size, seed=cfg.seed, device=device)
        torch.manual_seed(cfg.seed)
        net = build_unet(cfg).to(device)
        self.optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, fused=fp.fused_adam or None)
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


class BareStep:
    """One fixed random batch (B, 1, 28, 28), t (B,) and null class: forward, MSE, backward, Adam.

    With `cuda_graph` the step is captured once as a CUDA graph and replayed: what the step costs
    without a kernel launch from Python per operation (the overhead a small UNet pays on a GPU).
    """

    def __init__(self, cfg: TrainOptions, device: torch.device, fp: FastPath):
        self.fp, self.device = fp, device
        g = torch.Generator(device).manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        net = build_unet(cfg).to(device)
        self.optimizer = torch.optim.Adam(
            net.parameters(), lr=cfg.lr, fused=fp.fused_adam or None, capturable=fp.cuda_graph
        )
        self.model = prepare(net, fp)
        b = cfg.batch_size
        self.x = as_input(torch.randn(b, 1, 28, 28, generator=g, device=device), fp)
        self.t = torch.rand(b, generator=g, device=device)
        self.c = torch.zeros(b, cfg.num_classes, device=device)
        self.graph = self._capture() if fp.cuda_graph else None

    def _eager_step(self) -> None:
        with applied(self.fp, self.device):
            out = self.model(self.x, self.t, self.c)
        (out.float() - self.x).pow(2).mean().backward()
        self.optimizer.step()

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream (as CUDA graph capture requires), then record one step; its
        backward writes the gradients in place on each replay."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._eager_step()
                self.optimizer.zero_grad(set_to_none=True)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._eager_step()
        return graph

    def step(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        self._eager_step()
        self.optimizer.zero_grad(set_to_none=True)


def trainer_work(cfg: TrainOptions, runs_dir: Path) -> Work:
    """A fresh `Trainer` run of cfg.steps steps per call; returns the seconds its own log implies.

    The run logs once, at its last step, so its images_per_s covers every step and excludes the
    end-of-run preview and checkpoint.
    """
    counter = itertools.count()

    def run() -> float:
        name = f"{cfg.experiment}-{next(counter)}"
        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
            run_dir = Trainer(
                make_options(cfg.experiment, **{**_overrides(cfg), "name": name}), runs_dir
            ).run()
        last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
        return cfg.steps * cfg.batch_size / last["images_per_s"]

    return run


def _overrides(cfg: TrainOptions) -> dict:
    keys = (
        "dataset",
        "hidden",
        "batch_size",
        "device",
        "wandb_mode",
        "steps",
        "log_every",
        "preview_steps",
    )
    return {k: getattr(cfg, k) for k in keys}


def _repeat(fn, n: int) -> Work:
    def run() -> None:
        for _ in range(n):
            fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    return run


def _peak_note(gflops: float, peaks: dict[str, float | None]) -> str:
    shares = [f"{100 * gflops / v:.0f}% of {k} peak" for k, v in peaks.items() if v]
    return f"{gflops:.1f} GFLOP/s" + (" = " + ", ".join(shares) if shares else "")


def training_rows(
    sizes: TrainSizes,
    device: torch.device,
    variants: Sequence[FastPath],
    *,
    peaks: dict[str, float | None] | None = None,
    bare: Sequence[FastPath] = (),
    experiments: Sequence[str] = EXPERIMENTS,
) -> list[Row]:
    """Rows for each experiment: reference, lab trainer, `variants` of LabStep, `bare` BareSteps.

    `peaks` ({"fp32": GFLOP/s, "bf16": GFLOP/s}, the matmul peaks) adds each row's share of them."""
    peaks = peaks or {}
    digits = load_dataset("mnist-5k", split="train")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        dataset = torchvision_mnist(digits, Path(tmp) / "data")
        for exp in experiments:
            cfg = experiment_config(
                exp, sizes, device, steps=sizes.steps, log_every=10**6, preview_steps=1
            )
            ref = ReferenceLoop(cfg, dataset, device)
            labs = {fp.label: LabStep(cfg, digits, device, fp) for fp in variants}
            bares = {"bare " + fp.label: BareStep(cfg, device, fp) for fp in bare}
            flops = count_flops(LabStep(cfg, digits, device, FastPath()).step)
            works = {
                "reference": _repeat(ref.step, sizes.steps),
                "trainer": trainer_work(cfg, Path(tmp) / "runs"),
                **{k: _repeat(lab.step, sizes.steps) for k, lab in {**labs, **bares}.items()},
            }
            timings = interleaved(works, repeats=sizes.repeats, warmup=sizes.warmup)
            base = timings["reference"].median
            names = {
                "reference": "reference loop (torchvision MNIST+ToTensor, DataLoader, fp32)",
                "trainer": f"lab Trainer as configured ({resolve_mixed_precision('auto', device)} "
                "by --mixed-precision auto; its logged images/s)",
                **{k: f"lab step, {k}" for k in labs},
                **{k: f"{k} (random batch in memory, Adam)" for k in bares},
            }
            for key, t in timings.items():
                gflops = flops * sizes.steps / t.median / 1e9
                note = _peak_note(gflops, peaks) + f"; spread {t.spread:.0%}"
                rows.append(
                    Row(
                        SECTION,
                        f"{exp} B={cfg.batch_size}: {names[key]}",
                        cfg.batch_size * sizes.steps / t.median,
                        "img/s",
                        base / t.median,
                        note,
                    )
                )
    return rows


def preview_share_rows(
    device: torch.device,
    recipe: str = "fast",
    steps: int = 4,
    experiments: Sequence[str] = EXPERIMENTS,
) -> list[Row]:
    """Share of a full `recipe` run's wall time its previews take, projected from one short real
    Trainer run: its logged step time and the seconds its final preview (grid + GIF) took.

    share = P * preview / (total_steps * step + P * preview), P = the full run's epochs (one grid
    each)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
        for exp in experiments:
            over = dict(dataset="mnist-5k", device=device.type, wandb_mode="disabled")
            full = make_options(exp, recipe=recipe, **over)
            data = load_dataset("mnist-5k", split="train")
            plan = start_plan(
                full,
                dataset=data.name,
                train_size=len(data),
                pass_steps=Batches(data, full.batch_size, seed=0).steps_per_pass,
                world_size=1,
                device=device.type,
                mixed_precision="no",
            )
            short = make_options(exp, recipe=recipe, steps=steps, log_every=10**6, name=exp, **over)
            with contextlib.redirect_stderr(io.StringIO()):
                run_dir = Trainer(short, Path(tmp)).run()
            last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            step_s = short.batch_size / last["images_per_s"]
            preview_s = latest_checkpoint(run_dir).meta["preview_s"]
            epochs = plan.epochs
            share = epochs * preview_s / (plan.total_steps * step_s + epochs * preview_s)
            rows.append(
                Row(
                    PREVIEW,
                    f"{exp} --recipe {recipe}: {plan.total_steps} steps, {epochs} preview(s)",
                    100 * share,
                    "% of wall",
                    None,
                    f"preview {preview_s:.1f} s, step {step_s:.3f} s (B={full.batch_size}, "
                    f"D={full.hidden})",
                )
            )
    return rows
