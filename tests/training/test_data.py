"""Datasets (offline: mnist-5k, Debian's Fashion-MNIST when installed) and the batcher."""

from pathlib import Path

import pytest
import torch

from training import data as D
from training.data import Batches, Digits, load_dataset, to_signed, to_unit


@pytest.fixture(scope="module")
def small() -> Digits:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (103, 1, 28, 28), generator=g, dtype=torch.uint8)
    return Digits(images, torch.arange(103) % 10, "toy")


def test_mnist_5k_split_shapes_and_stratification():
    train, test = load_dataset("mnist-5k", split="train"), load_dataset("mnist-5k", split="test")
    assert train.images.shape == (4500, 1, 28, 28) and test.images.shape == (500, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.name == test.name == "mnist-5k" and train.num_classes == 10
    assert train.class_names == tuple("0123456789")
    assert test.labels.bincount().tolist() == [50] * 10
    assert train.labels.bincount().tolist() == [450] * 10
    assert (
        train.images.float().mean() > 20 and train.images.max() == 255
    )  # real digits, 0 = background
    assert train.images[:, :, 0, :].float().mean() < 1

    # disjoint and deterministic
    def flat(d):
        return {bytes(x.numpy()) for x in d.images.reshape(len(d), -1)}

    assert not flat(train) & flat(test)
    again = load_dataset("mnist-5k", split="test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="mnist-5k"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="split"):
        load_dataset("mnist-5k", split="val")


def test_mnist_unreachable_is_clear(tmp_path, mnist_offline):
    with pytest.raises(D.DatasetUnavailableError, match="mnist-5k"):
        load_dataset("mnist", root=tmp_path)


def test_auto_falls_back_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(D, "mnist_available", lambda root: False)
    assert load_dataset("auto", root=tmp_path, split="test").name == "mnist-5k"
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "mnist-5k" in out
    monkeypatch.setattr(D, "mnist_available", lambda root: True)
    assert D.resolve_dataset_name("auto", tmp_path) == "mnist"


def test_mnist_from_disk_converts_whole_tensors(tmp_path, monkeypatch):
    import torchvision

    class FakeMNIST:
        def __init__(self, root, train, download):
            n = 7 if train else 3
            self.data = torch.full((n, 28, 28), 9, dtype=torch.uint8)
            self.targets = torch.arange(n)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    d = load_dataset("mnist", root=tmp_path, split="train")
    assert d.images.shape == (7, 1, 28, 28) and d.images.dtype == torch.uint8 and d.name == "mnist"
    assert D.mnist_available(tmp_path)


@pytest.mark.skipif(
    not D.DEBIAN_FASHION.is_dir(), reason="Debian dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_debian(tmp_path):
    d = load_dataset("fashion-mnist", root=tmp_path, split="test")
    assert d.images.shape == (10000, 1, 28, 28) and d.num_classes == 10
    assert d.class_names[0] == "T-shirt/top" and d.labels.bincount().tolist() == [1000] * 10
    assert (Path(tmp_path) / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()


def test_debian_fashion_files_are_staged_whole(tmp_path, monkeypatch):
    import gzip

    debian = tmp_path / "debian"
    debian.mkdir()
    with gzip.open(debian / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes(range(256)) * 40)
    monkeypatch.setattr(D, "DEBIAN_FASHION", debian)
    D._stage_debian_fashion(tmp_path / "data")
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert [p.name for p in raw.iterdir()] == ["t10k-labels-idx1-ubyte"]  # no temporary left
    assert (raw / "t10k-labels-idx1-ubyte").read_bytes() == bytes(range(256)) * 40


def test_normalizers():
    x = torch.tensor([0, 255, 51], dtype=torch.uint8)
    torch.testing.assert_close(to_unit(x), torch.tensor([0.0, 1.0, 0.2]))
    torch.testing.assert_close(to_signed(x), torch.tensor([-1.0, 1.0, -0.6]))
    assert torch.equal(D.from_signed(to_signed(x)), x)


def test_batches_deterministic_and_cover_each_pass(small):
    a, b = Batches(small, 16, seed=3), Batches(small, 16, seed=3)
    assert a.steps_per_pass == 7
    seen = []
    for step, (x, y) in zip(range(7), a(), strict=False):
        x2, y2 = b.batch(step)
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
        seen.append(y)
    assert torch.cat(seen).sort().values.tolist() == small.labels.sort().values.tolist()
    assert x.shape[0] == 103 - 6 * 16  # last batch of a pass is partial
    assert not torch.equal(a.batch(0)[0], a.batch(7)[0])  # pass 1 reshuffled
    assert not torch.equal(a.batch(0)[0], Batches(small, 16, seed=4).batch(0)[0])
    assert Batches(small, 16, seed=3, drop_last=True).steps_per_pass == 6


def test_batches_resume_at_step(small):
    full = Batches(small, 10, seed=1, normalize=to_unit)
    stream = [y for _, (_, y) in zip(range(40), full(), strict=False)]
    resumed = Batches(small, 10, seed=1, normalize=to_unit)
    tail = [y for _, (_, y) in zip(range(15), resumed(25), strict=False)]
    for got, want in zip(tail, stream[25:], strict=False):
        assert torch.equal(got, want)


def test_batches_shards_cover_the_global_batch(small):
    world = 3
    shards = [Batches(small, 12, seed=0, rank=r, world_size=world) for r in range(world)]
    single = Batches(small, 12, seed=0)
    for step in (0, 5, 8):  # 8 = the partial last batch (103 = 8*12 + 7)
        parts = [s.batch(step)[1] for s in shards]
        assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
        assert sorted(torch.cat(parts).tolist()) == sorted(single.batch(step)[1].tolist())
    with pytest.raises(ValueError):
        Batches(small, 12, seed=0, rank=3, world_size=3)


def test_derive_seed_stable():
    assert D.derive_seed(0, 1) == D.derive_seed(0, 1) != D.derive_seed(1, 0)
    assert 0 <= D.derive_seed(2**40, 7) < 2**63
