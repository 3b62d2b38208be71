"""The training loop: one objective, one UNet, Adam and its learning-rate schedule, on Accelerate.

`train(options, runs_dir)` runs an experiment end to end and returns the run directory. The
dataset sits on the device as uint8 and each step fetches its batch by index
(`training.data.Batches`); every random draw of step s comes from a generator seeded with (seed, s,
rank), so a resumed run repeats the uninterrupted one bit for bit on the same machine with no
random state saved. Only the main process writes the run record, W&B and checkpoints; each process
trains its slice of the global batch (DDP).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator, PartialState
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm.auto import tqdm

from samplers.app.devices import resolve_device, resolve_mixed_precision

from . import checkpoints as ck
from .config import (
    ConfigError,
    RunConfig,
    TrainingDiverged,
    TrainOptions,
    TrainPlan,
    preview_sampler,
    run_length,
    start_plan,
)
from .data import Batches, derive_seed, load_dataset, to_signed, to_unit
from .figures import GIF_MS, sample_grid, save_gif, save_grid
from .objectives import LOSS_BINS, Objective, loss_by_t_bins, make_objective
from .pretrained import LabModel, build_unet, max_batch, vp_alphas_cumprod
from .runlock import claim_run
from .runs import (
    check_run_dir,
    load_run_config,
    read_config,
    read_summary,
    safe_run_dir,
    sample_grid_path,
)
from .schedules import make_scheduler
from .tracking import Tracker
from .untrusted import make_folder

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


def ema_model(model: nn.Module, decay: float, warmup: float) -> AveragedModel:
    """An exponential moving average of `model`'s weights (its buffers copied), warmed up: the
    update after step n (`update_parameters`) uses decay min(decay, (1 + n) / (warmup + n)).

    It starts from the model's weights as they are now (step 0), so its `n_averaged` counts the
    steps plus one; set it to step + 1 when loading the weights of step `step`.
    """

    @torch.no_grad()
    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor) -> None:
        n = int(num_averaged)
        torch._foreach_lerp_(averaged, current, 1 - min(decay, (1 + n) / (warmup + n)))

    ema = AveragedModel(model, multi_avg_fn=update).eval().requires_grad_(False)
    ema.update_parameters(model)  # the first update copies: the average starts at step 0
    return ema


class BatchesThroughObjective(nn.Module):
    """`update_bn`'s model: forward(k) runs `step(net, k)`, the objective on training batch k, so
    BatchNorm statistics are taken on the inputs the network sees in training (noised, with
    classes dropped) rather than on clean images."""

    def __init__(self, net: nn.Module, step: Callable[[nn.Module, int], object]):
        super().__init__()
        self.net, self.step = net, step
        self.train(net.training)  # the mode update_bn puts the network back in

    def forward(self, k: int) -> None:
        self.step(self.net, k)


def make_accelerator(options: TrainOptions) -> Accelerator:
    """An Accelerator on options.device ("auto" lets Accelerate choose) with
    options.mixed_precision."""
    resolve_device(options.device)  # DeviceUnavailable (the CLI: one line, exit 2) if not here
    device = PartialState(cpu=options.device == "cpu").device
    if device.type == "cuda":  # deterministic cuDNN algorithms, so a resumed run stays bit-exact
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return Accelerator(
        cpu=options.device == "cpu",
        mixed_precision=resolve_mixed_precision(options.mixed_precision, device),
    )


def memory_format(options: TrainOptions) -> torch.memory_format:
    """channels_last (NHWC) when options.channels_last: oneDNN's convolutions then skip the layout
    reorders around every call (`make bench`); else torch's default NCHW."""
    return torch.channels_last if options.channels_last else torch.contiguous_format


class Trainer:
    """One training run: a new run of `options`, or (`resume`) the continuation of the run of its
    name; the plan is resolved here, then call `run()`."""

    def __init__(
        self,
        options: TrainOptions,
        runs_dir: str | Path = "runs",
        *,
        resume: bool = False,
        stop_after: int | None = None,
    ):
        self.acc = make_accelerator(options)
        self.main = self.acc.is_main_process
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        if options.batch_size % self.world:
            raise ConfigError(
                f"--batch-size {options.batch_size} must divide over {self.world} processes"
            )
        self.run_dir = safe_run_dir(runs_dir, options.name)
        # the run folder's one writer from before its first write (RunBusy: another trains it),
        # released by run(), or at once when the set-up fails (not when the GC collects it)
        self.claim = claim_run(self.run_dir) if self.main else None
        try:
            self._set_up(options, resume, stop_after)
        except BaseException:
            if self.claim is not None:
                self.claim.release()
            raise

    def _set_up(self, options: TrainOptions, resume: bool, stop_after: int | None) -> None:
        """The plan, model, EMA, optimizer, scheduler, objective and tracker of the run (a
        resume's restored from its newest good checkpoint)."""
        candidates = check_run_dir(self.run_dir, resume)
        stored = load_run_config(self.run_dir).plan if resume else None
        if resume and self.main and "plan" not in read_config(self.run_dir):
            print(
                f"note: {self.run_dir / 'config.json'} has the layout of an earlier version; "
                "this resume writes it anew as options and plan",
                file=sys.stderr,
                flush=True,
            )
        self.acc.wait_for_everyone()
        self.stop_after = stop_after
        self.device = self.acc.device

        self.batches, dataset, train_size = self._training_data(options, stored)
        runtime = dict(
            world_size=self.world,
            device=str(self.device),
            mixed_precision=self.acc.mixed_precision,
        )
        if stored is None:
            plan = start_plan(
                options,
                dataset=dataset,
                train_size=train_size,
                pass_steps=self.batches.steps_per_pass,
                **runtime,
            )
        else:  # the epoch length and LR decay as first planned; the length as now asked
            plan = replace(stored, total_steps=run_length(options, stored.epoch_steps), **runtime)
        self.options, self.plan = options, plan

        torch.manual_seed(options.seed)
        self.model = self._initial_model(options).to(
            self.device, memory_format=memory_format(options)
        )
        self.ema = (
            ema_model(self.model, options.ema_decay, options.ema_warmup)
            if options.ema_decay
            else None
        )
        # fused: one kernel over all parameters instead of six small ops each (CPU and CUDA have it)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(),
            lr=options.lr,
            betas=(0.9, options.adam_beta2),
            fused=self.device.type in ("cpu", "cuda") or None,
        )
        self.scheduler, self.scheduler_per_step = make_scheduler(self.optimizer, options, plan)
        self.alphas_cumprod = vp_alphas_cumprod(options)
        ab = None if self.alphas_cumprod is None else self.alphas_cumprod.to(self.device)
        self.objective = self._make_objective(options, ab)
        self.step = 0
        self.preview_seconds = 0.0  # wall time spent drawing grids and the GIF (kept on resume)
        self.last_loss: float | None = None
        self.resume_from = self._resume(candidates) if candidates else None  # none: step 0
        if self.resume_from is not None and self.step >= plan.total_steps:
            # at its length it resumes only to finish its record (killed in its last bookkeeping)
            finished = read_summary(self.run_dir).get("status") == "finished"
            if self.step > plan.total_steps or finished:
                raise ConfigError(
                    f"--resume: run {options.name!r} has trained {self.step} steps already, "
                    f"and {plan.total_steps} is its length; pass a larger --steps or "
                    f"--epochs to train on"
                )
        self.ddp_model, self.ddp_optimizer = self.acc.prepare(self.model, self.optimizer)
        self.tracker = (
            Tracker(
                self.run_dir,
                RunConfig(options, plan),
                resume_step=self.step if self.resume_from else None,
            )
            if self.main
            else None
        )
        self._test_images: Tensor | None = None

    # ------------------------------------------------------------------ what it trains on
    # A distillation (training.distill.DistillTrainer) overrides these three: its batches are
    # teacher trajectories, its model the teacher's widened UNet, its objective the flow map's.
    def _training_data(
        self, options: TrainOptions, stored: TrainPlan | None
    ) -> tuple[Any, str, int]:
        """(batches, the dataset's name, its training images): the run's dataset (a resume's as
        first planned) as seeded, resumable `Batches`; `batches.batch(step)` is step's batch
        and `batches.steps_per_pass` one pass's steps."""
        data = load_dataset(
            stored.dataset if stored else options.dataset, options.data_root, "train"
        )
        if options.batch_size > len(data):  # a batch never repeats an image
            raise ConfigError(
                f"--batch-size {options.batch_size:,} is more than the {len(data):,} training "
                f"images of {data.name}"
            )
        normalize = to_signed if options.data_range[0] < 0 else to_unit
        batches = Batches(
            data,
            options.batch_size,
            seed=options.seed,
            device=self.device,
            normalize=normalize,
            rank=self.rank,
            world_size=self.world,
            drop_last=self.world > 1,
        )
        return batches, data.name, len(data)

    def _initial_model(self, options: TrainOptions) -> nn.Module:
        """The network at step 0 (its random draws from torch's global generator, seeded)."""
        return build_unet(options)

    def _make_objective(self, options: TrainOptions, alphas_cumprod: Tensor | None) -> Objective:
        return make_objective(options, alphas_cumprod)

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
        """Load checkpoint folder `path` into model, EMA, optimizer and scheduler (CheckpointError
        naming the file when any part is unreadable or does not fit this run). A checkpoint of an
        earlier version also holds global RNG states: none is needed, so they are not restored."""
        ckpt = ck.read_checkpoint(path)
        ckpt.check_experiment(self.options.experiment)

        def load(name, net):
            return ck.load_weights(
                path / name,
                self.device,
                experiment=self.options.experiment,
                expected=net.state_dict(),
            )

        weights = load("model.safetensors", self.model)
        ema = load("ema.safetensors", self.ema.module) if self.ema is not None else None
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
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            raise ck.CheckpointError(f"{path / 'state.pt'}: does not fit this run ({e})") from e
        self.model.load_state_dict(weights)
        if ema is not None:
            self.ema.module.load_state_dict(ema)
            self.ema.n_averaged.fill_(step + 1)  # the average started at step 0 (ema_model)
        self.step = step
        self.last_loss = ckpt.meta.get("loss")
        self.preview_seconds = float(ckpt.meta.get("preview_s", 0.0))
        return ckpt

    def _save(self, epoch: int, partial_step: int | None = None) -> Path:
        nets = [self.model] + ([self.ema.module] if self.ema is not None else [])
        if not torch.stack([p.isfinite().all() for n in nets for p in n.parameters()]).all():
            raise TrainingDiverged(
                f"the weights became NaN or infinite by step {self.step}; "
                f"checkpoint {ck.checkpoint_name(epoch)} was not written"
            )
        state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
        }
        meta = {
            "experiment": self.options.experiment,
            "step": self.step,
            "loss": self.last_loss,
            "arch": self.options.arch,
            "hidden": self.options.hidden,
            "conditioning": self.options.conditioning,
            "wall_time_s": round(self.tracker.wall_time(), 2),
            "preview_s": round(self.preview_seconds, 2),
        }
        path = ck.save_checkpoint(
            self.run_dir,
            epoch,
            model=self.model.state_dict(),
            state=state,
            meta=meta,
            ema=self.ema.module.state_dict() if self.ema else None,
            step=partial_step,
        )
        ck.prune_checkpoints(self.run_dir, self.options.keep_checkpoints, self.options.milestones)
        return path

    # ------------------------------------------------------------------ previews
    def _sampling_model(self) -> LabModel:
        net = self.ema.module if self.ema is not None else self.model
        ab = None if self.alphas_cumprod is None else self.alphas_cumprod.to(self.device)
        return LabModel(
            self.options,
            net,
            ab,
            precision=self.acc.mixed_precision,
            max_batch=max_batch(self.device, self.acc.mixed_precision),
            plan=self.plan,
        )

    @torch.no_grad()
    def _preview(self, epoch: int, gif: bool) -> tuple[Path, Path | None]:
        """samples/epoch-NNNN.png: a 4x10 class grid, 40 samples, or (denoiser) a test-set
        clean / noisy / denoised grid; with `gif`, samples/sampling.gif of the sampling chain."""
        out = make_folder(self.run_dir / "samples")
        lab = self._sampling_model()
        was_training = lab.unet.training
        lab.unet.eval()
        g = torch.Generator(self.device).manual_seed(derive_seed(self.options.seed, "preview"))
        try:
            if self.options.kind == "denoiser":
                clean = self._test_batch()
                noisy = clean + self.options.sigma * torch.randn(
                    clean.shape, generator=g, device=self.device
                )
                rows = torch.cat([clean, noisy.clamp(0, 1), lab.unet(noisy).clamp(0, 1)])
                return save_grid(rows * 2 - 1, sample_grid_path(self.run_dir, epoch)), None
            sampler, steps = preview_sampler(self.options)
            gif_frames = GIF_FRAMES if gif and self.options.kind != "pure-noise" else 0
            x, frames = sample_grid(lab, g, sampler=sampler, steps=steps, gif_frames=gif_frames)
            png = save_grid(x, sample_grid_path(self.run_dir, epoch))
            return png, save_gif(frames, out / "sampling.gif", **GIF_MS) if frames else None
        finally:
            lab.unet.train(was_training)

    def _test_batch(self) -> Tensor:
        """The first 10 test images (10, 1, 28, 28) in [0, 1]: the denoiser's preview, loaded
        once."""
        if self._test_images is None:
            test = load_dataset(self.plan.dataset, self.options.data_root, "test")
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
        options, acc = self.options, self.acc
        total, epoch_steps = self.plan.total_steps, self.plan.epoch_steps
        gen = torch.Generator(self.device)
        # loss sum, count, then LOSS_BINS bin sums and LOSS_BINS bin counts
        acc_vals = torch.zeros(2 + 2 * LOSS_BINS, device=self.device)
        bad_step = torch.zeros((), dtype=torch.long, device=self.device)  # first non-finite loss
        if self.step == total:  # resumed after its last checkpoint: redo the last epoch's end
            self._end_epoch(self.plan.epochs, final=True)
            return
        last_t, last_step = time.time(), self.step
        self._bar = bar = tqdm(
            total=total,
            initial=self.step,
            desc=options.name,
            unit="step",
            disable=not self.main,
            dynamic_ncols=True,
        )
        while self.step < total:
            x, c = self._batch(self.step)
            gen.manual_seed(derive_seed(options.seed, "noise", self.step, self.rank))
            with acc.autocast():
                losses, t = self.objective(self.ddp_model, x, c, gen)
            loss = losses.mean()
            acc.backward(loss)
            if options.grad_clip is not None:
                acc.clip_grad_norm_(self.model.parameters(), options.grad_clip)
            bad_step = torch.where(
                (bad_step > 0) | loss.detach().isfinite(), bad_step, self.step + 1
            )
            self.ddp_optimizer.step()
            self.ddp_optimizer.zero_grad(set_to_none=True)
            if self.scheduler_per_step:
                self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                self.ema.update_parameters(self.model)
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
            epoch_end = self.step % epoch_steps == 0 or self.step == total
            if self.step % options.log_every == 0 or epoch_end:
                now = time.time()
                vals = acc.reduce(acc_vals, "sum") if self.world > 1 else acc_vals
                self._check_finite(vals[0], bad_step, last_step)
                self._log(
                    vals,
                    (self.step - last_step) * options.batch_size / max(now - last_t, 1e-9),
                    bar,
                )
                acc_vals.zero_()
                last_t, last_step = now, self.step
            if epoch_end:
                if self.step % epoch_steps == 0 and not self.scheduler_per_step:
                    self.scheduler.step()
                epoch = self.plan.epoch_of(self.step)
                self._end_epoch(epoch, final=self.step == total)
                last_t = time.time()  # previews and checkpoints do not count against images/s
                if self.stop_after is not None and epoch >= self.stop_after and self.step < total:
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
        if self.step % self.options.log_every:
            return False
        flag = torch.tensor(float(STOP.is_set()), device=self.device)
        return bool(self.acc.reduce(flag, "sum").item() > 0)

    def _stop(self) -> None:
        """A checkpoint at this step (unless the epoch's end just wrote one), then "stopped"."""
        if self.main:
            last = ck.latest_checkpoint(self.run_dir)
            if last is None or last.meta.get("step") != self.step:
                if self.ema is not None:
                    self._recalibrate_ema()
                self._save(self.step // self.plan.epoch_steps, partial_step=self.step)
            self.tracker.finish(
                "stopped",
                gif=None,
                checkpoint=None,
                epoch=self.plan.epoch_of(self.step),
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
            f"{self.plan.epoch_of(int(bad_step or self.step))}); training stopped "
            f"without saving the non-finite weights. Last good checkpoint: "
            f"{last.path if last else 'none'}. Try a lower --lr (now {self.options.lr:g})."
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
            "epoch": self.plan.epoch_of(self.step),
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
        x = x.contiguous(memory_format=memory_format(self.options))
        return x, F.one_hot(y, self.options.num_classes).to(
            x.dtype
        ) if self.options.class_conditional else None

    def _recalibrate_ema(self) -> None:
        """The EMA model's BatchNorm statistics, recomputed (update_bn: a cumulative average) on
        BN_RECALIBRATION_BATCHES training batches run through the objective as in training, from
        a generator of their own. An EMA copies the live model's statistics, which do not fit the
        averaged weights; training draws nothing here, and the next EMA update copies the live
        statistics back, so resuming stays exact."""
        gen = torch.Generator(self.device)

        def step(net: nn.Module, k: int) -> None:
            x, c = self._batch(k)
            gen.manual_seed(derive_seed(self.options.seed, "bn-recalibration", self.step, k))
            with self.acc.autocast():
                self.objective(net, x, c, gen)

        batches = BatchesThroughObjective(self.ema.module, step)
        update_bn(range(BN_RECALIBRATION_BATCHES), batches)

    def _end_epoch(self, epoch: int, final: bool) -> None:
        if self.main:
            if self.ema is not None:
                self._recalibrate_ema()
            start = time.perf_counter()
            png, gif = self._preview(epoch, gif=final)
            self.preview_seconds += time.perf_counter() - start
            self.tracker.epoch_done(epoch, self.step, self.last_loss, png)
            ckpt = None
            if epoch % self.options.checkpoint_every == 0 or final:
                ckpt = self._save(epoch)
            if final:
                self.tracker.finish(
                    "finished",
                    gif=gif,
                    checkpoint=ckpt,
                    epoch=epoch,
                    step=self.step,
                    loss=self.last_loss,
                )
        self.acc.wait_for_everyone()


def train(
    options: TrainOptions,
    runs_dir: str | Path = "runs",
    *,
    resume: bool = False,
    stop_after: int | None = None,
) -> Path:
    """Train `options` into runs_dir/options.name (continuing that run with `resume`, its plan as
    stored with the length `options` now asks); returns the run folder. A student's options
    (options.distill) train by distillation (training.distill.DistillTrainer).

    `stop_after`: stop after that many epochs as if killed (tests of exact resume).
    """
    trainer = Trainer
    if options.is_student:
        from .distill import DistillTrainer

        trainer = DistillTrainer
    return trainer(options, runs_dir, resume=resume, stop_after=stop_after).run()
