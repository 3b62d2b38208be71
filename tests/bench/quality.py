"""Sample quality next to speed (needs trained runs) and time to quality (opt-in, long)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.checkpoints import list_checkpoints
from training.config import FAST_SAMPLER, recipe_defaults
from training.evaluation import evaluate_run
from training.runs import read_config

from .report import Row
from .sampling_bench import GUIDANCE, SCHEDULES

QUALITY = "sample quality at guidance 5 (needs --run)"
TTQ = "time to quality on mnist-5k"


def run_kind(run: Path) -> str:
    """ "ddpm" or "flow" for a class-conditional run; ValueError otherwise."""
    cfg = read_config(run)
    if cfg.get("conditioning") != "class" or cfg.get("kind") not in SCHEDULES:
        raise ValueError(
            f"{run}: need a class-conditional DDPM or flow run, got {cfg.get('experiment')!r}"
        )
    return cfg["kind"]


def quality_rows(runs: Sequence[Path], per_class: int, device: str) -> list[Row]:
    """Class accuracy and Fréchet distance of each run at its full and 50-step samplers."""
    rows = []
    for run in runs:
        for sampler, steps in SCHEDULES[run_kind(run)]:
            start = time.perf_counter()
            r = evaluate_run(
                run,
                (GUIDANCE,),
                per_class=per_class,
                samplers=(sampler,),
                steps=(steps,),
                device=device,
                write=False,
            )
            (cell,), (floor,) = r.evaluation.cells, r.evaluation.floors
            note = (
                f"Fréchet {cell.frechet:.2f} (real-vs-real floor {floor.mean:.2f}); "
                f"{per_class * 10} digits in {time.perf_counter() - start:.0f} s"
            )
            rows.append(
                Row(
                    QUALITY,
                    f"{run.name}: {sampler} {steps} steps",
                    100 * cell.accuracy,
                    "% class acc",
                    None,
                    note,
                )
            )
    return rows


@dataclass(frozen=True)
class TTQSettings:
    experiment: str = "flow-class"
    recipe: str = "course"
    epoch_steps: int | None = None  # checkpoint (and score) every N steps; None: every course epoch
    target: float = 0.98
    per_class: int = 20
    max_minutes: float = 240.0
    device: str = "cpu"

    @property
    def scorer(self) -> tuple[str, int]:
        """(sampler, steps) each checkpoint is scored with: the 50-step sampler of the experiment's
        kind (Heun 50 for flow, within a point of Euler 300; strided DDPM 50)."""
        return FAST_SAMPLER[recipe_defaults(self.experiment).kind]


def time_to_quality(runs_dir: Path, s: TTQSettings, extra_args: Sequence[str] = ()) -> list[Row]:
    """Train s.experiment with s.recipe on mnist-5k with the lab CLI; each epoch's checkpoint is
    scored while the trainer is paused (SIGSTOP), so training time excludes evaluation. Stops at
    the target. `epoch_steps` only sets how often it is scored (the LR schedules, batches and noise
    do not depend on it)."""
    name = f"ttq-{s.experiment}-{s.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    every = ["--epoch-steps", str(s.epoch_steps)] if s.epoch_steps else []
    cmd = [
        sys.executable,
        "-m",
        "training",
        s.experiment,
        "--recipe",
        s.recipe,
        "--dataset",
        "mnist-5k",
        "--name",
        name,
        "--runs-dir",
        str(runs_dir),
        "--wandb-mode",
        "disabled",
        "--keep-checkpoints",
        "1000",
        "--preview-steps",
        "1",
        "--device",
        s.device,
        *every,
        *extra_args,
    ]
    label = f"{s.experiment} --recipe {s.recipe}"
    sampler, steps = s.scorer
    run_dir, rows, seen = runs_dir / name, [], set()
    pauses: list[tuple[float, float]] = []  # (end time, seconds): evaluation while SIGSTOPped
    log = runs_dir / f"{name}.log"
    runs_dir.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 60 * s.max_minutes
    try:
        while time.time() < deadline:
            done = proc.poll() is not None
            new = (
                [c for c in list_checkpoints(run_dir) if c.epoch not in seen]
                if run_dir.exists()
                else []
            )
            for ckpt in new:
                seen.add(ckpt.epoch)
                written = (ckpt.path / "meta.json").stat().st_mtime
                minutes = (
                    ckpt.meta["wall_time_s"] - sum(d for end, d in pauses if end < written)
                ) / 60
                start = time.time()
                if not done:
                    proc.send_signal(signal.SIGSTOP)
                try:
                    r = evaluate_run(
                        run_dir,
                        (GUIDANCE,),
                        per_class=s.per_class,
                        samplers=(sampler,),
                        steps=(steps,),
                        checkpoint=ckpt.epoch,
                        device=s.device,
                        write=False,
                    )
                finally:
                    if not done:
                        proc.send_signal(signal.SIGCONT)
                        pauses.append((time.time(), time.time() - start))
                acc = r.evaluation.cells[0].accuracy
                rows.append(
                    Row(
                        TTQ,
                        f"{label}: epoch {ckpt.epoch} (step {ckpt.meta.get('step')})",
                        minutes,
                        "min",
                        None,
                        f"class acc {acc:.1%} ({sampler} {steps}, {s.per_class * 10} digits)",
                    )
                )
                if acc >= s.target:
                    return rows + [Row(TTQ, f"{label}: reached {s.target:.0%}", minutes, "min")]
            if done:
                if proc.returncode:
                    raise RuntimeError(
                        f"training failed ({proc.returncode}): {log.read_text()[-2000:]}"
                    )
                break
            time.sleep(2)
        return rows + [
            Row(TTQ, f"{label}: reached {s.target:.0%}", None, "min", None, "not reached")
        ]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            proc.wait()
