"""A small digit classifier for evaluation: trained once per dataset, cached as safetensors.

Its penultimate layer (``feature_dim`` values) is the feature space of the lab's Fréchet
distance. Images in and out of this module are uint8, (N, 28, 28) or (N, 1, 28, 28), 0 = black.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from torch import Tensor, nn

from samplers.app.files import write_bytes_atomic

from .data import Batches, Digits, derive_seed, load_dataset, to_unit


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training recipe; a cached classifier is reused only if this matches."""

    width: int = 16  # channels of the first conv pair (the second pair has 2x)
    feature_dim: int = 64  # penultimate features (Fréchet space)
    passes: float = 8.0  # passes over the train split (capped by max_steps)
    max_steps: int = 1000  # full MNIST: ~2 passes at batch 128
    batch_size: int = 128
    lr: float = 2e-3
    max_shift: int = 2  # random translation (pixels) per batch, for robustness
    seed: int = 0


class DigitClassifier(nn.Module):
    """conv-conv-pool x2 -> Linear(feature_dim) -> ReLU (features) -> Linear(num_classes)."""

    def __init__(self, num_classes: int = 10, width: int = 16, feature_dim: int = 64):
        super().__init__()
        w = width

        def block(cin, cout):
            return [
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]

        self.body = nn.Sequential(
            *block(1, w),
            *block(w, 2 * w),
            nn.Flatten(),
            nn.Linear(2 * w * 49, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, 1, 28, 28) float in [0, 1] -> (B, feature_dim)."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _as_batch(images: Tensor) -> Tensor:
    """uint8 (N, 28, 28) or (N, 1, 28, 28) -> (N, 1, 28, 28) uint8."""
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images (0 = black background), got {images.dtype}")
    return images.reshape(-1, 1, 28, 28)


@dataclass
class TrainedClassifier:
    """A classifier in eval mode with the facts of its training."""

    model: DigitClassifier
    dataset: str
    test_accuracy: float
    train_seconds: float

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _map(self, images: Tensor, fn, batch: int = 1000) -> Tensor:
        x = _as_batch(images)
        return (
            torch.cat(
                [
                    fn(to_unit(x[i : i + batch].to(self.device))).float().cpu()
                    for i in range(0, len(x), batch)
                ]
            )
            if len(x)
            else torch.empty(0)
        )

    def predict(self, images: Tensor) -> Tensor:
        """uint8 images -> (N,) int64 predicted labels (on the CPU)."""
        return self._map(images, self.model).argmax(1)

    def features(self, images: Tensor) -> Tensor:
        """uint8 images -> (N, feature_dim) float32 penultimate features (on the CPU)."""
        return self._map(images, self.model.features)


def train_classifier(
    train: Digits,
    test: Digits,
    cfg: ClassifierConfig = ClassifierConfig(),
    device: str | torch.device = "cpu",
) -> TrainedClassifier:
    """Train on ``train`` with Adam (seeded), report accuracy on ``test``."""
    start = time.time()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "classifier-init"))
        model = DigitClassifier(train.num_classes, cfg.width, cfg.feature_dim).to(device)
    batches = Batches(
        train,
        cfg.batch_size,
        seed=derive_seed(cfg.seed, "classifier-data"),
        device=device,
        normalize=to_unit,
    )
    steps = min(cfg.max_steps, round(cfg.passes * batches.steps_per_pass))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "classifier-shift"))
    model.train()
    for _, (x, y) in zip(range(steps), batches(), strict=False):
        dy, dx = torch.randint(-cfg.max_shift, cfg.max_shift + 1, (2,), generator=g).tolist()
        x = torch.roll(x, (dy, dx), dims=(2, 3))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    trained = TrainedClassifier(model.eval(), train.name, float("nan"), time.time() - start)
    trained.test_accuracy = float((trained.predict(test.images) == test.labels).float().mean())
    return trained


def cache_path(runs_dir: str | Path, dataset: str) -> Path:
    return Path(runs_dir) / ".cache" / f"classifier-{dataset}.safetensors"


def _load_cached(
    path: Path, config_json: str, cfg: ClassifierConfig, device: str | torch.device
) -> TrainedClassifier | None:
    """The classifier cached at `path` if it was trained with `config_json` (cfg as JSON) and
    loads, else None."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("config") != config_json:
            return None
        model = DigitClassifier(int(meta["num_classes"]), cfg.width, cfg.feature_dim)
        model.load_state_dict(load_file(str(path)))
        return TrainedClassifier(
            model.to(device).eval(),
            meta["dataset"],
            float(meta["test_accuracy"]),
            float(meta["train_seconds"]),
        )
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
        return None  # truncated, corrupt or foreign: retrain and overwrite it


def load_classifier(
    dataset: str,
    runs_dir: str | Path = "runs",
    *,
    data_root: str | Path = "data",
    cfg: ClassifierConfig = ClassifierConfig(),
    device: str | torch.device = "cpu",
) -> TrainedClassifier:
    """The cached classifier for a (resolved) dataset name, training and caching it if needed.

    Cache: ``<runs_dir>/.cache/classifier-<dataset>.safetensors`` (written atomically); a cache made
    with a different ``ClassifierConfig``, or one that does not load, is retrained. A cache that
    cannot be written (a full disk) is skipped with a warning line: the classifier is still used.
    """
    path = cache_path(runs_dir, dataset)
    config_json = json.dumps(asdict(cfg), sort_keys=True)
    cached = _load_cached(path, config_json, cfg, device) if path.is_file() else None
    if cached is not None:
        return cached
    train = load_dataset(dataset, data_root, "train")
    test = load_dataset(train.name, data_root, "test")
    trained = train_classifier(train, test, cfg, device)
    weights = {k: v.detach().cpu().contiguous() for k, v in trained.model.state_dict().items()}
    data = save(  # bytes first: safetensors' own file writes fail with no errno
        weights,
        metadata={
            "config": config_json,
            "dataset": train.name,
            "num_classes": str(train.num_classes),
            "test_accuracy": repr(trained.test_accuracy),
            "train_seconds": repr(trained.train_seconds),
        },
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    except OSError as e:
        print(
            f"warning: the classifier was not cached ({e.strerror or e}); it is trained anew "
            "next time",
            file=sys.stderr,
        )
    return trained
