"""Fixtures for training tests: tiny fake run folders built without the trainer."""

import json

import pytest
import torch

from training.checkpoints import save_checkpoint
from training.config import RunConfig, make_options, start_plan
from training.pretrained import build_unet
from training.runs import write_json


@pytest.fixture
def fake_run(tmp_path):
    """make(experiment, epochs=(1,), **overrides) -> run folder with a tiny model (hidden 8),
    epochs of 10 steps.

    Each epoch of `epochs` gets a checkpoint of a freshly initialised model (seeded by the epoch),
    plus a metrics.jsonl, config.json and summary.json shaped like a real run's.
    """

    def make(experiment: str, epochs=(1,), **overrides):
        kw = dict(
            hidden=8,
            dataset="mnist-5k",
            sample_steps=4,
            wandb_mode="disabled",
            epoch_steps=10,
            steps=10 * max(epochs),
        )
        cfg = make_options(experiment, **{**kw, **overrides})
        plan = start_plan(
            cfg,
            dataset="mnist-5k",
            train_size=4500,
            pass_steps=4500 // cfg.batch_size,
            world_size=1,
            device="cpu",
            mixed_precision="no",
        )
        run_dir = tmp_path / "runs" / cfg.name
        run_dir.mkdir(parents=True)
        write_json(run_dir / "config.json", RunConfig(cfg, plan).to_json())
        for p in epochs:
            torch.manual_seed(p)
            unet = build_unet(cfg)
            save_checkpoint(
                run_dir,
                p,
                model=unet.state_dict(),
                state={},
                meta={"experiment": cfg.experiment, "step": 10 * p},
            )
        rows = [
            {
                "step": s,
                "epoch": plan.epoch_of(s),
                "time": s * 0.1,
                "loss": 1.0 / s,
                "lr": cfg.lr,
                "images_per_s": 100.0,
                "loss_t_bin": [None] * 10,
            }
            for s in range(1, 10 * max(epochs) + 1)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        write_json(run_dir / "summary.json", {"status": "finished", "epoch": max(epochs)})
        return run_dir

    return make
