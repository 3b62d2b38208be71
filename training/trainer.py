"""The training loop: one objective, one UNet, Adam and its learning-rate schedule, on Accelerate.

`train(cfg, runs_dir)` runs an experiment end to end and returns the run directory. The dataset
sits on the device as uint8 and each step fetches its batch by index (`training.data.Batches`);
every random draw of step s comes from a generator seeded with (seed, s, rank), so a resumed run
repeats the uninterrupted one bit for bit on the same machine. Only the main process writes the
run record, W&B and checkpoints; each process trains its slice of the global batch (DDP).
"""

from __future__ import annotations

import copy
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from torch import Tensor, nn
from tqdm.auto import tqdm

from samplers.app.devices import resolve_device, resolve_mixed_precision

from . import checkpoints as ck
from .config import ConfigError, TrainConfig, TrainingDiverged, preview_sampler, resolve_length
from .data import Batches, derive_seed, load_dataset, to_signed, to_unit
from .figures import GIF_MS, sample_grid, save_gif, save_grid
from .objectives import LOSS_BINS, loss_by_t_bins, make_objective
from .pretrained import LabModel, build_unet, max_batch, vp_alphas_cumprod
from .runlock import claim_run
from .runs import check_run_dir, read_summary, safe_run_dir, sample_grid_path
from .schedules import make_scheduler
from .tracking import Tracker

GIF_FRAMES = 30
BN_RECALIBRATION_BATCHES = 32  # training batches whose statistics an EMA model's BatchNorm takes
STOP = threading.Event()  # set by request_stop (the CLI's SIGTERM and first SIGINT handler)


def request_stop(*_signal_args) -> None:
    """Ask the training loop to stop after the current step: a checkpoint there, status
    "stopped"."""
    STOP.set()


def interrupt(*_signal_args) -> None:
    """Ctrl-C (the CLI's SIGINT handler): the first stops as request_stop does, a second aborts."""
    if STOP.is_set():
        raise KeyboardInterrupt
    print(
        "\nstopping after this step, with a checkpoint there (Ctrl-C again: abort without one)",
        file=sys.stderr,
        flush=True,
    )
    request_stop()


class EMA:
    """Exponential moving average of a model's weights (buffers copied), warmed up over early
    steps."""

    def __init__(self, model: nn.Module, decay: float, warmup: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup = decay, warmup

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = min(self.decay, (1 + num_updates) / (self.warmup + num_updates))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers(), strict=False):
            e.copy_(b)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, inputs: Callable[[nn.Module, int], object], batches: int
) -> None:
    """Set every BatchNorm's running statistics to the exact average over `batches` calls of
    inputs(model, k), which runs the model in train mode on batch k (as a training step would).

    An EMA of the weights is not matched by the live model's statistics (the EMA copies them):
    activations of the averaged weights are then mis-normalised, which cost a constant-rate run's
    samples most of their quality (docs/performance.md). Recomputing them is what SWA does.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    try:
        for k in range(batches):
            inputs(model, k)
    finally:
        for m, momentum in zip(norms, momenta, strict=False):
            m.momentum = momentum
        model.train(was_training)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """An Accelerator on cfg.device ("auto" lets Accelerate choose) with cfg.mixed_precision."""
    resolve_device(cfg.device)  # DeviceUnavailable (the CLI: one line, exit 2) when it is not here
    device = PartialState(cpu=cfg.device == "cpu").device
    if device.type == "cuda":  # deterministic cuDNN algorithms, so a resumed run stays bit-exact
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return Accelerator(
        cpu=cfg.device == "cpu",
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision, device),
    )


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """channels_last (NHWC) when cfg.channels_last: oneDNN's convolutions then skip the layout
    reorders around every call (`make bench`); else torch's default NCHW."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


class Trainer:
    """One training run; build with a config (resolved in `run`), then call `run()`."""

    def __init__(
        self,
        cfg: TrainConfig,
        runs_dir: str | Path = "runs",
        *,
        resume: bool = False,
        stop_after: int | None = None,
    ):
        self.acc = make_accelerator(cfg)
        self.main = self.acc.is_main_process
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        if cfg.batch_size % self.world:
            raise ConfigError(
                f"--batch-size {cfg.batch_size} must divide over {self.world} processes"
            )
        self.run_dir = safe_run_dir(runs_dir, cfg.name)
        # the run folder's one writer from before its first write (RunBusy: another trains it)
        self.claim = claim_run(self.run_dir) if self.main else None
        candidates = check_run_dir(self.run_dir, resume)
        self.acc.wait_for_everyone()
        self.stop_after = stop_after
        self.device = self.acc.device

        data = load_dataset(cfg.dataset, cfg.data_root, "train")
        normalize = to_signed if cfg.data_range[0] < 0 else to_unit
        self.batches = Batches(
            data,
            cfg.batch_size,
            seed=cfg.seed,
            device=self.device,
            normalize=normalize,
            rank=self.rank,
            world_size=self.world,
            drop_last=self.world > 1,
        )
        if not resume:
            cfg = resolve_length(cfg, len(data), self.batches.steps_per_pass)
        extra = {
            **cfg.extra,
            "train_size": len(data),
            "world_size": self.world,
            "device": str(self.device),
            "mixed_precision": self.acc.mixed_precision,
        }
        self.cfg = cfg = TrainConfig.from_dict(
            {**cfg.to_dict(), "dataset": data.name, "extra": extra}
        )

        torch.manual_seed(cfg.seed)
        self.model = build_unet(cfg).to(self.device, memory_format=memory_format(cfg))
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay else None
        # fused: one kernel over all parameters instead of six small ops each (CPU and CUDA have it)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, fused=self.device.type in ("cpu", "cuda") or None
        )
        self.scheduler, self.scheduler_per_step = make_scheduler(self.optimizer, cfg)
        self.alphas_cumprod = vp_alphas_cumprod(cfg)
        ab = None if self.alphas_cumprod is None else self.alphas_cumprod.to(self.device)
        self.objective = make_objective(cfg, ab)
        self.step = 0
        self.preview_seconds = 0.0  # wall time spent drawing grids and the GIF (kept on resume)
        self.last_loss: float | None = None
        self.resume_from = self._resume(candidates) if candidates else None  # none: step 0
        if self.resume_from is not None and self.step >= cfg.total_steps:
            # at its length it resumes only to finish its record (killed in its last bookkeeping)
            finished = read_summary(self.run_dir).get("status") == "finished"
            if self.step > cfg.total_steps or finished:
                raise ConfigError(
                    f"--resume: run {cfg.name!r} has trained {self.step} steps already, "
                    f"and {cfg.total_steps} is its length; pass a larger --steps or "
                    f"--epochs to train on"
                )
        self.ddp_model, self.ddp_optimizer = self.acc.prepare(self.model, self.optimizer)
        self.tracker = (
            Tracker(self.run_dir, cfg, resume_step=self.step if self.resume_from else None)
            if self.main
            else None
        )
        self._test_images: Tensor | None = None

    # ------------------------------------------------------------------ state
    def _resume(self, folders: list[Path]) -> ck.Checkpoint:
        """Restore the newest checkpoint that loads; each one skipped gets one warning line."""
        skipped = []
        for path in folders:
            try:
                ckpt = self._restore(path)
            except ck.CheckpointError as e:
                skipped.append(str(e))
                continue
            if self.main:
                for reason in skipped:
                    print(
                        f"warning: {reason}; resuming from {ckpt.path.name} (step {self.step}) "
                        f"instead",
                        file=sys.stderr,
                        flush=True,
                    )
            return ckpt
        raise ck.CheckpointError(
            f"--resume: no checkpoint of run {self.run_dir.name!r} loads: " + "; ".join(skipped)
        )

    def _restore(self, path: Path) -> ck.Checkpoint:
        """Load checkpoint folder `path` into model, EMA, optimizer, scheduler and RNGs
        (CheckpointError naming the file when any part is unreadable or does not fit this run)."""
        ckpt = ck.read_checkpoint(path)
        ckpt.check_experiment(self.cfg.experiment)

        def load(name, net):
            return ck.load_weights(
                path / name, self.device, experiment=self.cfg.experiment, expected=net.state_dict()
            )

        weights = load("model.safetensors", self.model)
        ema = load("ema.safetensors", self.ema.model) if self.ema is not None else None
        state = ck.load_state(ckpt)
        ck.verify_checksums(ckpt)
        try:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            for i, slots in state["optimizer"]["state"].items():
                for name, v in slots.items():
                    if v.dim() and v.shape != params[i].shape:
                        raise ValueError(
                            f"optimizer {name} of parameter {i} has shape "
                            f"{tuple(v.shape)}, the model's is {tuple(params[i].shape)}"
                        )
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            step = int(state["step"])
            ck.set_rng_state(state["rng"])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise ck.CheckpointError(f"{path / 'state.pt'}: does not fit this run ({e})") from e
        self.model.load_state_dict(weights)
        if ema is not None:
            self.ema.model.load_state_dict(ema)
        self.step = step
        self.last_loss = ckpt.meta.get("loss")
        self.preview_seconds = float(ckpt.meta.get("preview_s", 0.0))
        return ckpt

    def _save(self, period: int, partial_step: int | None = None) -> Path:
        nets = [self.model] + ([self.ema.model] if self.ema is not None else [])
        if not torch.stack([p.isfinite().all() for n in nets for p in n.parameters()]).all():
            raise TrainingDiverged(
                f"the weights became NaN or infinite by step {self.step}; "
                f"checkpoint {ck.checkpoint_name(period)} was not written"
            )
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ck.rng_state(),
            "step": self.step,
        }
        meta = {
            "experiment": self.cfg.experiment,
            "step": self.step,
            "loss": self.last_loss,
            "arch": self.cfg.arch,
            "hidden": self.cfg.hidden,
            "conditioning": self.cfg.conditioning,
            "wall_time_s": round(self.tracker.wall_time(), 2),
            "preview_s": round(self.preview_seconds, 2),
        }
        path = ck.save_checkpoint(
            self.run_dir,
            period,
            model=self.model.state_dict(),
            state=state,
            meta=meta,
            ema=self.ema.model.state_dict() if self.ema else None,
            step=partial_step,
        )
        ck.prune_checkpoints(self.run_dir, self.cfg.keep_checkpoints, self.cfg.milestones)
        return path

    # ------------------------------------------------------------------ previews
    def _sampling_model(self) -> LabModel:
        net = self.ema.model if self.ema is not None else self.model
        ab = None if self.alphas_cumprod is None else self.alphas_cumprod.to(self.device)
        return LabModel(
            self.cfg,
            net,
            ab,
            precision=self.acc.mixed_precision,
            max_batch=max_batch(self.device, self.acc.mixed_precision),
        )

    @torch.no_grad()
    def _preview(self, period: int, gif: bool) -> tuple[Path, Path | None]:
        """samples/epoch-NNNN.png: a 4x10 class grid, 40 samples, or (denoiser) a test-set
        clean / noisy / denoised grid; with `gif`, samples/sampling.gif of the sampling chain."""
        out = self.run_dir / "samples"
        out.mkdir(exist_ok=True)
        lab = self._sampling_model()
        was_training = lab.unet.training
        lab.unet.eval()
        g = torch.Generator(self.device).manual_seed(derive_seed(self.cfg.seed, "preview"))
        try:
            if self.cfg.kind == "denoiser":
                clean = self._test_batch()
                noisy = clean + self.cfg.sigma * torch.randn(
                    clean.shape, generator=g, device=self.device
                )
                rows = torch.cat([clean, noisy.clamp(0, 1), lab.unet(noisy).clamp(0, 1)])
                return save_grid(rows * 2 - 1, sample_grid_path(self.run_dir, period)), None
            sampler, steps = preview_sampler(self.cfg)
            gif_frames = GIF_FRAMES if gif and self.cfg.kind != "pure-noise" else 0
            x, frames = sample_grid(lab, g, sampler=sampler, steps=steps, gif_frames=gif_frames)
            png = save_grid(x, sample_grid_path(self.run_dir, period))
            return png, save_gif(frames, out / "sampling.gif", **GIF_MS) if frames else None
        finally:
            lab.unet.train(was_training)

    def _test_batch(self) -> Tensor:
        """The first 10 test images (10, 1, 28, 28) in [0, 1]: the denoiser's preview, loaded
        once."""
        if self._test_images is None:
            test = load_dataset(self.cfg.dataset, self.cfg.data_root, "test")
            self._test_images = to_unit(test.images[:10]).to(self.device)
        return self._test_images

    # ------------------------------------------------------------------ loop
    def run(self) -> Path:
        try:
            self._loop()
        except BaseException as e:
            if getattr(self, "_bar", None) is not None:
                self._bar.close()  # the error message starts on a line of its own
            if self.tracker is not None:
                self.tracker.fail(str(e) or type(e).__name__)
            raise
        finally:
            if self.claim is not None:
                self.claim.release()
        return self.run_dir

    def _loop(self) -> None:
        cfg, acc = self.cfg, self.acc
        total, period_steps = cfg.total_steps, cfg.period_steps
        gen = torch.Generator(self.device)
        # loss sum, count, then LOSS_BINS bin sums and LOSS_BINS bin counts
        acc_vals = torch.zeros(2 + 2 * LOSS_BINS, device=self.device)
        bad_step = torch.zeros((), dtype=torch.long, device=self.device)  # first non-finite loss
        if self.step == total:  # resumed after its last checkpoint: redo the last period's end
            self._end_period(math.ceil(total / period_steps), final=True)
            return
        last_t, last_step = time.time(), self.step
        self._bar = bar = tqdm(
            total=total,
            initial=self.step,
            desc=cfg.name,
            unit="step",
            disable=not self.main,
            dynamic_ncols=True,
        )
        while self.step < total:
            x, c = self._batch(self.step)
            gen.manual_seed(derive_seed(cfg.seed, "noise", self.step, self.rank))
            with acc.autocast():
                losses, t = self.objective(self.ddp_model, x, c, gen)
            loss = losses.mean()
            acc.backward(loss)
            bad_step = torch.where(
                (bad_step > 0) | loss.detach().isfinite(), bad_step, self.step + 1
            )
            self.ddp_optimizer.step()
            self.ddp_optimizer.zero_grad(set_to_none=True)
            if self.scheduler_per_step:
                self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                self.ema.update(self.model, self.step)
            sums, counts = loss_by_t_bins(losses, t)
            acc_vals += torch.cat(
                [
                    losses.detach().float().sum().view(1),
                    losses.new_tensor([losses.shape[0]], dtype=torch.float32),
                    sums,
                    counts,
                ]
            )
            bar.update(1)
            period_end = self.step % period_steps == 0 or self.step == total
            if self.step % cfg.log_every == 0 or period_end:
                now = time.time()
                vals = acc.reduce(acc_vals, "sum") if self.world > 1 else acc_vals
                self._check_finite(vals[0], bad_step, last_step)
                self._log(
                    vals, (self.step - last_step) * cfg.batch_size / max(now - last_t, 1e-9), bar
                )
                acc_vals.zero_()
                last_t, last_step = now, self.step
            if period_end:
                if self.step % period_steps == 0 and not self.scheduler_per_step:
                    self.scheduler.step()
                period = math.ceil(self.step / period_steps)
                self._end_period(period, final=self.step == total)
                last_t = time.time()  # previews and checkpoints do not count against images/s
                if self.stop_after is not None and period >= self.stop_after and self.step < total:
                    break
            if self.step < total and self._stop_requested():
                self._stop()
                break
        bar.close()
        if self.tracker is not None and self.step < total:  # stopped early: as if killed here
            self.tracker.wandb.finish()

    def _stop_requested(self) -> bool:
        """STOP on any process (several: checked at logging steps, where they sync anyway)."""
        if self.world == 1:
            return STOP.is_set()
        if self.step % self.cfg.log_every:
            return False
        flag = torch.tensor(float(STOP.is_set()), device=self.device)
        return bool(self.acc.reduce(flag, "sum").item() > 0)

    def _stop(self) -> None:
        """A checkpoint at this step (unless the period's end just wrote one), then "stopped"."""
        if self.main:
            last = ck.latest_checkpoint(self.run_dir)
            if last is None or last.meta.get("step") != self.step:
                if self.ema is not None:
                    self._recalibrate_ema()
                self._save(self.step // self.cfg.period_steps, partial_step=self.step)
            self.tracker.finish(
                "stopped",
                gif=None,
                checkpoint=None,
                epoch=round(self.step / self.cfg.period_steps, 4),
                step=self.step,
                loss=self.last_loss,
            )
        self.acc.wait_for_everyone()

    def _check_finite(self, loss_sum: Tensor, bad_step: Tensor, last_step: int) -> None:
        """TrainingDiverged (on every process) when a loss since the last log was NaN or inf."""
        if math.isfinite(loss_sum.item()):
            return
        step = int(bad_step) or f"{last_step + 1}-{self.step}"  # another process saw it first
        last = ck.latest_checkpoint(self.run_dir)
        raise TrainingDiverged(
            f"the loss became NaN or infinite at step {step} (epoch "
            f"{math.ceil(int(bad_step or self.step) / self.cfg.period_steps)}); training stopped "
            f"without saving the non-finite weights. Last good checkpoint: "
            f"{last.path if last else 'none'}. Try a lower --lr (now {self.cfg.lr:g})."
        )

    def _log(self, vals: Tensor, images_per_s: float, bar) -> None:
        if not self.main:
            return
        v = vals.tolist()  # the only host sync of a logging interval
        self.last_loss = v[0] / max(v[1], 1)
        bin_sums, bin_counts = v[2 : 2 + LOSS_BINS], v[2 + LOSS_BINS :]
        bins = [s / n if n else None for s, n in zip(bin_sums, bin_counts, strict=False)]
        row = {
            "step": self.step,
            "epoch": round(self.step / self.cfg.period_steps, 4),
            "time": round(self.tracker.wall_time(), 3),
            "loss": self.last_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": round(images_per_s, 1),
            "loss_t_bin": bins,
        }
        self.tracker.log_metrics(row)
        bar.set_postfix(loss=f"{self.last_loss:.4f}", img_s=f"{images_per_s:.0f}")

    def _batch(self, step: int) -> tuple[Tensor, Tensor | None]:
        """Training batch `step`: images (b, 1, 28, 28) in the training layout, one-hot labels
        (b, K) for class-conditional models (else None)."""
        x, y = self.batches.batch(step)
        x = x.contiguous(memory_format=memory_format(self.cfg))
        return x, F.one_hot(y, self.cfg.num_classes).to(
            x.dtype
        ) if self.cfg.class_conditional else None

    def _recalibrate_ema(self) -> None:
        """The EMA model's BatchNorm statistics, recomputed on BN_RECALIBRATION_BATCHES training
        batches noised as in training, from a generator of their own (training draws nothing here;
        the next EMA update copies the live statistics back, so resuming stays exact)."""
        gen = torch.Generator(self.device)

        def step_inputs(model: nn.Module, k: int) -> None:
            x, c = self._batch(k)
            gen.manual_seed(derive_seed(self.cfg.seed, "bn-recalibration", self.step, k))
            with self.acc.autocast():
                self.objective(model, x, c, gen)

        recalibrate_batchnorm(self.ema.model, step_inputs, BN_RECALIBRATION_BATCHES)

    def _end_period(self, period: int, final: bool) -> None:
        if self.main:
            if self.ema is not None:
                self._recalibrate_ema()
            start = time.perf_counter()
            png, gif = self._preview(period, gif=final)
            self.preview_seconds += time.perf_counter() - start
            self.tracker.epoch_done(period, self.step, self.last_loss, png)
            ckpt = None
            if period % self.cfg.checkpoint_every == 0 or final:
                ckpt = self._save(period)
            if final:
                self.tracker.finish(
                    "finished",
                    gif=gif,
                    checkpoint=ckpt,
                    epoch=period,
                    step=self.step,
                    loss=self.last_loss,
                )
        self.acc.wait_for_everyone()


def train(
    cfg: TrainConfig,
    runs_dir: str | Path = "runs",
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> Path:
    """Train `cfg` into runs_dir/cfg.name (continuing it with `resume`); returns the run folder.

    `stop_after`: stop after that many periods as if killed (tests of exact resume).
    """
    return Trainer(cfg, runs_dir, resume=resume, stop_after=stop_after).run()
