"""Run tracking: the local run record (training.runs describes it) mirrored to Weights & Biases.

W&B mode: `--wandb-mode` wins, then the WANDB_MODE environment variable, else "online" when an API
key is configured (WANDB_API_KEY or a netrc entry for api.wandb.ai) and "offline" otherwise. An
online start that fails (no network: at most INIT_TIMEOUT_S) falls back to offline with a one-line
warning and the `wandb sync` command. A W&B failure later in the run (the network or the wandb
service lost) is never fatal either: one warning with the sync command, then the run goes on with
the local record only. W&B files live under `<run_dir>/wandb/`. Secrets are never printed or
recorded: only the mode, project, run id, URL and sync command are.
"""

from __future__ import annotations

import json
import math
import netrc
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from samplers.app.files import atomic_path

from .config import RunConfig
from .runlock import process_identity
from .runs import METRICS, SUMMARY, load_run_config, read_summary, write_json
from .untrusted import open_append, open_under

INIT_TIMEOUT_S = 30  # the most an unreachable W&B may delay a run (WANDB_INIT_TIMEOUT can lower it)
WANDB_HOST = "api.wandb.ai"


def key_configured() -> bool:
    """True when a W&B API key is set in the environment or in ~/.netrc (never reads it out)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested: str | None) -> str:
    """The W&B mode to start with (see the module docstring)."""
    mode = (
        requested or os.environ.get("WANDB_MODE") or ("online" if key_configured() else "offline")
    )
    return {"dryrun": "offline", "run": "online"}.get(mode, mode)


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


class RunRecord:
    """The local record: metrics.jsonl (appended and flushed per row) and summary.json (atomic).

    Its writes never follow a symlink: whole files are replaced by a rename (a link in their place
    is replaced, not written through) and metrics rows are appended with O_NOFOLLOW. `summary`:
    the summary it starts from and updates.
    """

    def __init__(self, run_dir: Path, summary: dict[str, Any]):
        self.run_dir = run_dir
        self.metrics_path = run_dir / METRICS
        self.summary = summary

    def write_config(self, config: RunConfig) -> None:
        write_json(self.run_dir / "config.json", config.to_json())

    def start_metrics(self, step: int | None) -> None:
        """An empty metrics.jsonl (step None: a run from step 0), or its rows up to `step` (a
        resume continues from that checkpoint's step; rows not the trainer's are dropped)."""
        with atomic_path(self.metrics_path) as tmp, open(tmp, "wb") as out:
            if step is None:
                return
            try:
                with open_under(self.run_dir, METRICS, None) as (fd, _):
                    with os.fdopen(os.dup(fd), "rb") as lines:
                        for line in lines:
                            if _step_of(line) <= step:
                                out.write(line if line.endswith(b"\n") else line + b"\n")
            except FileNotFoundError:
                pass

    def append_metrics(self, row: dict[str, Any]) -> None:
        fd = open_append(self.metrics_path)
        try:
            os.write(fd, (json.dumps(row) + "\n").encode())
        finally:
            os.close(fd)

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        self.summary = {**self.summary, **fields}
        write_json(self.run_dir / SUMMARY, self.summary)
        return self.summary


def _step_of(line: bytes) -> float:
    """The step of a metrics.jsonl line (inf for a line that is not a row with an integer step)."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
    return step if isinstance(step, int) and not isinstance(step, bool) else math.inf


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def _artifact_name(run_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", run_name) + "-model"


class WandbRun:
    """A thin wrapper over a wandb run that falls back from online to offline, and never hangs."""

    def __init__(self, run_dir: Path, config: RunConfig, run_id: str | None, mode: str):
        self.run_dir = run_dir
        self.mode = mode
        self.run = None
        self.error: str | None = None  # why W&B stopped mid-run (the local record goes on)
        if mode == "disabled":  # needs no wandb installed
            return
        import wandb

        self._wandb = wandb
        self.run_id = run_id or uuid.uuid4().hex[:8]
        options = config.options
        kwargs = dict(
            project=options.wandb_project,
            group=options.experiment,
            name=options.name,
            id=self.run_id,
            resume="allow",
            dir=str(run_dir),
            config=config.to_json(),
            tags=run_tags(config),
        )
        try:
            self.run = wandb.init(mode=mode, settings=self._settings(), **kwargs)
            return
        except Exception as e:  # network errors, timeouts, auth errors: never fatal for training
            if mode != "online":
                self._lost("start", e)
                return
            _warn(
                f"W&B online start failed ({_first_line(e)}); "
                f"logging offline. Upload later with: {self.sync_command('offline')}"
            )
        self.mode = "offline"
        self.run_id = kwargs["id"] = uuid.uuid4().hex[
            :8
        ]  # the failed id stays taken in wandb's service
        try:
            self.run = wandb.init(mode="offline", settings=self._settings(), **kwargs)
        except Exception as e:
            self._lost("offline start", e)

    @staticmethod
    def _settings():
        import wandb

        timeout = min(float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_S), INIT_TIMEOUT_S)
        return wandb.Settings(
            init_timeout=timeout,
            silent=True,
            console="off",
            x_disable_stats=True,
            disable_git=True,
            save_code=False,
        )

    def sync_command(self, mode: str | None = None) -> str:
        """The command that uploads this run's local W&B files (offline, or online cut short)."""
        pattern = "offline-run-*" if (mode or self.mode) == "offline" else f"run-*-{self.run_id}"
        return f"wandb sync {self.run_dir / 'wandb'}/{pattern}"

    def info(self) -> dict[str, Any]:
        if self.run is None and self.error is None:
            return {"mode": self.mode}
        info = (
            self._info
            if self.run is None
            else {
                "mode": self.mode,
                "project": self.run.project,
                "id": self.run_id,
                "url": self.run.url if self.mode == "online" else None,
                "dir": str(Path(self.run.dir).parent),
                "sync_command": self.sync_command() if self.mode == "offline" else None,
            }
        )
        if self.error is not None:
            info = {**info, "error": self.error, "sync_command": self.sync_command()}
        return info

    def _lost(self, what: str, e: BaseException) -> None:
        """W&B failed: warn once with the sync command, then stop calling it (never fatal)."""
        try:
            self._info = self.info() if self.run is not None else {"mode": self.mode}
        except Exception:
            self._info = {"mode": self.mode, "id": self.run_id}
        self.error = f"W&B {what} failed ({_first_line(e)})"
        self.run = None
        _warn(
            f"{self.error}; training goes on with the local run record. "
            f"Upload what W&B saved later with: {self.sync_command()}"
        )
        try:  # drop the broken wandb service so that its exit hook does not fail again
            self._wandb.teardown()
        except (Exception, SystemExit):
            pass

    def _call(self, what: str, fn, *args: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:
            self._lost(what, e)

    def log(self, data: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self._call("log", self.run.log, data, step=step)

    def log_image(self, key: str, path: Path, step: int, **extra: Any) -> None:
        if self.run is not None:
            self._call(
                "log", lambda: self.run.log({key: self._wandb.Image(str(path)), **extra}, step=step)
            )

    def log_gif(self, key: str, path: Path, step: int) -> None:
        if self.run is not None:
            self._call(
                "log",
                lambda: self.run.log({key: self._wandb.Video(str(path), format="gif")}, step=step),
            )

    def log_checkpoint(self, ckpt_dir: Path, epoch: int, metadata: dict[str, Any]) -> None:
        def log():
            art = self._wandb.Artifact(
                _artifact_name(self.run.name or "run"), type="model", metadata=metadata
            )
            art.add_dir(str(ckpt_dir))
            self.run.log_artifact(art, aliases=["latest", f"epoch-{epoch}"])

        self._call("artifact upload", log)

    def update_summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self._call("summary", self.run.summary.update, values)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self._call("finish", self.run.finish, exit_code=exit_code)
            self.run = None


def run_tags(config: RunConfig) -> list[str]:
    """A run's W&B tags: scheduler or no-scheduler, the dataset trained on, the recipe
    (`recipe-course`, `recipe-fast`) and the UNet (`arch-course`, `arch-improved`)."""
    options = config.options
    return [
        "scheduler" if options.scheduler else "no-scheduler",
        config.plan.dataset,
        f"recipe-{options.recipe}",
        f"arch-{options.arch}",
    ]


class Tracker:
    """Local record + W&B for the main process of a run; `wandb` info lands in summary.json."""

    def __init__(self, run_dir: Path, config: RunConfig, *, resume_step: int | None = None):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.start = time.time()
        # a run from step 0 (a new one, or one killed before its first checkpoint) starts afresh
        previous = read_summary(run_dir) if resume_step is not None else {}
        self.record = RunRecord(run_dir, previous)
        self.elapsed_before = float(previous.get("wall_time_s") or 0.0) if resume_step else 0.0
        self.record.write_config(config)
        self.record.start_metrics(resume_step)
        run_id = (previous.get("wandb") or {}).get("id")
        self.wandb = WandbRun(run_dir, config, run_id, resolve_mode(config.options.wandb_mode))
        self.record.update_summary(
            status="running", wandb=self.wandb.info(), process=process_identity().to_dict()
        )

    def wall_time(self) -> float:
        return self.elapsed_before + time.time() - self.start

    def log_metrics(self, row: dict[str, Any]) -> None:
        self.record.append_metrics(row)
        bins = {
            f"loss_t_bin/{i}": v for i, v in enumerate(row.get("loss_t_bin") or []) if v is not None
        }
        self.wandb.log(
            {k: v for k, v in row.items() if k not in ("step", "loss_t_bin")} | bins,
            step=row["step"],
        )

    def epoch_done(
        self, epoch: int, step: int, loss: float | None, sample_png: Path | None
    ) -> None:
        if sample_png is not None:
            self.wandb.log_image("samples", sample_png, step, epoch=epoch)
        self.record.update_summary(
            status="running",
            epoch=epoch,
            step=step,
            final_loss=loss,
            wall_time_s=round(self.wall_time(), 2),
        )

    def finish(
        self,
        status: str,
        *,
        gif: Path | None,
        checkpoint: Path | None,
        epoch: int,
        step: int,
        loss: float | None,
    ) -> dict[str, Any]:
        """Log the GIF and the last checkpoint (artifact), close W&B, write the final summary."""
        if gif is not None:
            self.wandb.log_gif("sampling", gif, step)
        if checkpoint is not None:
            self.wandb.log_checkpoint(checkpoint, epoch, {"step": step, "loss": loss})
        self.wandb.update_summary({"final_loss": loss, "epoch": epoch, "step": step})
        info = self.wandb.info()
        self.wandb.finish(0 if status in ("finished", "stopped") else 1)
        if self.wandb.error:
            info = self.wandb.info()
        if info.get("sync_command"):
            print(f"W&B run saved offline; upload with: {info['sync_command']}", file=sys.stderr)
        return self.record.update_summary(
            status=status,
            epoch=epoch,
            step=step,
            final_loss=loss,
            wall_time_s=round(self.wall_time(), 2),
            wandb=info,
        )

    def fail(self, error: str | None = None) -> None:
        """Mark the run failed in W&B (summary, exit code 1) and in summary.json, with `error`."""
        self.wandb.update_summary({"status": "failed", "error": error})
        info = self.wandb.info()
        self.wandb.finish(1)
        try:
            self.record.update_summary(
                status="failed",
                error=error,
                wall_time_s=round(self.wall_time(), 2),
                wandb=self.wandb.info() if self.wandb.error else info,
            )
        except OSError as e:  # e.g. the disk that failed the run: summary.json stays as it was
            _warn(f"could not mark the run failed in {self.record.run_dir / 'summary.json'}: {e}")
        if self.wandb.info().get("sync_command"):
            print(
                f"W&B run saved offline; upload with: {self.wandb.info()['sync_command']}",
                file=sys.stderr,
            )


def push_evaluation(run_dir: Path, results: dict[str, Any]) -> None:
    """Write evaluation results (evaluation.json's content: training.evaluation_record) into the
    W&B run's summary under "evaluation" (same id and mode)."""
    wb = read_summary(run_dir).get("wandb")
    if isinstance(wb, dict) and wb.get("id") and wb.get("mode") in ("online", "offline"):
        run = WandbRun(Path(run_dir), load_run_config(run_dir), wb["id"], wb["mode"])
        run.update_summary({"evaluation": results})
        run.finish()
