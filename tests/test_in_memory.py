"""The fast data path (datamodules/in_memory.py): same batches as torchvision's loaders, the same
augmentation semantics, reproducible and resumable sampling, the config switch, the benchmark."""

from __future__ import annotations

import sys
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.transforms import functional as TF

from datamodules import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from datamodules.base import Augmentation
from datamodules.in_memory import (
    BatchMaker,
    InMemoryImages,
    OrderedBatches,
    ShuffledBatches,
    rgb_to_grey,
    shift_and_flip,
)
from lightning_models import ImageClassifier, LabError
from tests.helpers import compose_train

# (datamodule class, extra arguments): MNIST format (as is, and replicated to 3 channels) and
# CIFAR format (as is, and made grey).
FORMATS = {
    "mnist": (MNISTDataModule, {"mean": [0.1307], "std": [0.3081]}),
    "mnist-rgb": (MNISTDataModule, {"in_channels": 3, "mean": [0.1, 0.2, 0.3], "std": [1, 2, 3]}),
    "fashion": (FashionMNISTDataModule, {"mean": [0.5], "std": [0.5]}),
    "cifar10": (CIFAR10DataModule, {"download": False}),
    "cifar10-grey": (CIFAR10DataModule, {"download": False, "in_channels": 1,
                                         "mean": [0.5], "std": [0.25]}),
}  # fmt: skip


def make(data_dir, name, **kwargs):
    cls, extra = FORMATS[name]
    dm = cls(str(data_dir), verify_checksums=False, **{**extra, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def torchvision_batch(dataset, rows) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[int(r)] for r in rows]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


# --- same batches as the torchvision path ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_fast_batches_are_the_torchvision_batches(data_dir, name):
    dm = make(data_dir, name, batch_size=32, val_size=40)
    assert dm.use_fast
    # Validation and test: the same images in the same order, bit for bit.
    for fast, plain in ((dm.val_dataloader(), dm.data_val), (dm.test_dataloader(), dm.data_test)):
        assert isinstance(fast, OrderedBatches)
        reference = list(DataLoader(plain, batch_size=32))
        assert len(fast) == len(reference)
        for (x, y), (x_ref, y_ref) in zip(fast, reference, strict=True):
            assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    # Training (no augmentation): each batch is the torchvision images of the rows it drew,
    # and one epoch draws every training row of the split once.
    loader = dm.train_dataloader()
    assert isinstance(loader, ShuffledBatches)
    rows = loader.plan(0).rows
    assert sorted(rows.tolist()) == sorted(dm.data_train.indices)
    for k, (x, y) in enumerate(loader):
        x_ref, y_ref = torchvision_batch(dm.data_train.dataset, rows[k * 32 : (k + 1) * 32])
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    assert k + 1 == len(loader) == len(DataLoader(dm.data_train, batch_size=32))


@pytest.mark.parametrize(
    ("channels", "out_channels", "mean", "std"),
    [(1, 1, [0.5], [0.25]), (1, 3, [0.1307], [0.3081]), (3, 3, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]),
     (3, 3, [0.5], [0.5]), (1, 3, [0.1, 0.2, 0.3], [1.0, 2.0, 3.0])],
)  # fmt: skip
def test_batches_from_the_set_normalised_once_are_the_per_batch_ones(
    monkeypatch, channels, out_channels, mean, std
):
    import gc

    import datamodules.in_memory as in_memory

    gc.collect()
    sets_before = len(in_memory._NORMALISED)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, channels, 6, 6), dtype=torch.uint8, generator=g)
    data = InMemoryImages(images, torch.arange(50) % 10)
    rows = torch.randperm(50, generator=g)[:16]
    make, other = BatchMaker(mean, std, out_channels), BatchMaker(mean, std, out_channels)
    x, y = make(data, rows)
    monkeypatch.setattr(in_memory, "PRENORMALISE_MAX_BYTES", 0)  # normalise each batch
    x_ref, y_ref = make(data, rows)
    assert torch.equal(x, x_ref) and torch.equal(y, y_ref) and x.is_contiguous()
    assert x.shape == (16, out_channels, 6, 6) and x.dtype == torch.float32
    # one normalised copy per set, shared, and gone with the images; none where the channels
    # are replicated before a per-channel Normalize
    shared = in_memory._NORMALISED.get(images, {})
    assert len(shared) == (0 if len(mean) > channels else 1)
    monkeypatch.undo()
    other(data, rows)
    assert in_memory._NORMALISED.get(images, {}) == shared
    del data, images, shared
    gc.collect()
    assert len(in_memory._NORMALISED) == sets_before


def test_a_small_validation_split_does_not_normalise_the_whole_training_file():
    import datamodules.in_memory as in_memory

    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    data, make = (
        InMemoryImages(images, torch.zeros(40, dtype=torch.int64)),
        BatchMaker([0.5], [0.5], 1),
    )
    few = list(OrderedBatches(data, 8, make, rows=torch.arange(30, 40)))
    assert images not in in_memory._NORMALISED
    everything = list(OrderedBatches(data, 8, make))  # a test set: all of its rows
    assert images in in_memory._NORMALISED
    again = list(OrderedBatches(data, 8, make, rows=torch.arange(30, 40)))  # now uses the copy
    assert all(torch.equal(a[0], b[0]) for a, b in zip(few, again, strict=True))
    assert torch.equal(torch.cat([x for x, _ in everything])[30:], torch.cat([x for x, _ in few]))


def test_grey_conversion_is_pils():
    rgb = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    rgb[0, 0, :4] = [[255, 255, 255], [0, 0, 0], [1, 2, 3], [128, 64, 32]]
    ours = rgb_to_grey(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    pil = np.stack([np.asarray(Image.fromarray(img).convert("L")) for img in rgb])
    assert torch.equal(ours[:, 0], torch.from_numpy(pil))


@pytest.mark.parametrize("mirror", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("max_shift", [0, 2, 4])
def test_shift_and_flip_is_randomcrop_with_zero_padding_then_flip(channels, max_shift, mirror):
    rng = np.random.default_rng(channels + max_shift)
    images = torch.from_numpy(rng.integers(1, 256, size=(12, channels, 20, 24), dtype=np.uint8))
    shifts = torch.from_numpy(rng.integers(0, 2 * max_shift + 1, size=(12, 2)))
    flips = torch.from_numpy(rng.integers(0, 2, size=12).astype(bool))
    flips[:2] = torch.tensor([True, False])
    if not mirror:
        flips[:] = False
    ours = shift_and_flip(
        images, max_shift, shifts if max_shift else None, flips if mirror else None
    )
    for img, (top, left), flip, out in zip(images, shifts.tolist(), flips, ours, strict=True):
        # torchvision on the PIL image, as RandomCrop(padding=max_shift) + RandomHorizontalFlip
        pil = Image.fromarray(img.permute(1, 2, 0).squeeze(2).numpy())
        pil = TF.crop(TF.pad(pil, max_shift, fill=0), top, left, 20, 24)
        if flip:
            pil = TF.hflip(pil)
        assert torch.equal(out, TF.pil_to_tensor(pil))


def test_augmentation_only_on_training_batches_and_as_configured(data_dir):
    fashion = make(data_dir, "fashion", batch_size=50, val_size=100, augment=True, max_shift=2)
    assert fashion.augmentation == Augmentation(max_shift=2, mirror=True)
    digits = make(data_dir, "mnist", val_size=100, augment=True, max_shift=3)
    assert digits.augmentation == Augmentation(max_shift=3, mirror=False)  # digits never mirrored
    cifar = make(data_dir, "cifar10", val_size=20, augment=True)
    assert cifar.augmentation == Augmentation(max_shift=4, mirror=True)
    # Both paths read the one declaration: the fast path's training batches shift and mirror so.
    assert (fashion.fast.train_batches.max_shift, fashion.fast.train_batches.mirror) == (2, True)
    assert not (digits.fast.eval_batches.max_shift or digits.fast.eval_batches.mirror)
    plan = fashion.train_dataloader().plan(0)
    assert plan.shifts.min() == 0 and plan.shifts.max() == 4 and plan.flips.any()
    plain = make(data_dir, "fashion", batch_size=50, val_size=100)
    for loader in ("val_dataloader", "test_dataloader"):
        for (a, _), (b, _) in zip(
            getattr(fashion, loader)(), getattr(plain, loader)(), strict=True
        ):
            assert torch.equal(a, b)
    # Same seed and epoch: the same rows, but shifted and mirrored.
    augmented = next(iter(fashion.train_dataloader()))[0]
    assert not torch.equal(augmented, next(iter(plain.train_dataloader()))[0])


# --- sampling ------------------------------------------------------------------------------


def tiny_loader(n=23, batch_size=5, seed=0, **kwargs) -> ShuffledBatches:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    data = InMemoryImages(images, torch.arange(n))
    return ShuffledBatches(data, batch_size, BatchMaker([0.0], [1 / 255], 1, **kwargs), seed)


def labels_of(loader, passes=1) -> list[list[int]]:
    return [y.tolist() for _ in range(passes) for _, y in loader]


def test_epochs_are_seeded_permutations_independent_of_what_was_drawn_before():
    loader = tiny_loader(max_shift=1, mirror=True)
    assert len(loader) == 5  # 23 images in batches of 5, the last one of 3
    epochs = [sum(labels_of(loader), []) for _ in range(3)]
    assert all(sorted(e) == list(range(23)) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    # A fresh loader with the same seed: the same epochs; set_epoch jumps straight to one.
    again = tiny_loader(max_shift=1, mirror=True)
    again.set_epoch(2)
    assert sum(labels_of(again), []) == epochs[2]
    assert sum(labels_of(tiny_loader(seed=1)), []) != epochs[0]
    # Batches do not depend on how many were drawn before: a pass broken off early changes
    # nothing in the next one.
    a, b = tiny_loader(max_shift=1, mirror=True), tiny_loader(max_shift=1, mirror=True)
    first = [x for x, _ in a]
    next(iter(b))
    assert all(torch.equal(x, y) for (x, _), y in zip(b, first, strict=True))


def test_the_seed_is_the_runs_seed_and_drawing_it_leaves_the_global_rng_alone(data_dir):
    dm = make(data_dir, "mnist", val_size=100)
    L.seed_everything(5)
    loader = dm.train_dataloader()
    assert loader.seed == 5 and loader.state_dict()["seed"] == 5
    after = torch.rand(3)
    L.seed_everything(5)
    assert torch.equal(torch.rand(3), after)  # model init sees the same RNG as without it


def test_state_dict_resumes_with_the_next_batch_of_the_same_permutation():
    loader = tiny_loader(seed=7, max_shift=1)
    full = [(x, y) for _ in range(2) for x, y in loader]
    partial_run = tiny_loader(seed=7, max_shift=1)
    batches = iter(partial_run)
    taken = [next(batches) for _ in range(3)]
    state = partial_run.state_dict()
    assert state == {"epoch": 0, "batches_done": 3, "seed": 7, "num_samples": 23,
                     "batch_size": 5}  # fmt: skip
    resumed = tiny_loader(seed=99, max_shift=1)  # the seed comes from the state
    resumed.load_state_dict(state)
    assert resumed.state_dict()["batches_done"] == 3
    rest = [(x, y) for _ in range(2) for x, y in resumed][: len(full) - 3]
    for (x, y), (x_ref, y_ref) in zip(taken + rest, full, strict=True):
        assert torch.equal(x, x_ref) and torch.equal(y, y_ref)
    with pytest.raises(LabError, match="saved training on 23 images in batches of 5"):
        tiny_loader(batch_size=4).load_state_dict(state)


def test_a_batch_fetched_ahead_is_not_counted_as_consumed():
    # Lightning's prefetching fetcher draws one batch ahead when a loader has no length; the
    # position then comes from the trainer's count of batches taken for training steps.
    taken = {"n": 0}
    loader = tiny_loader()
    loader.position_source = lambda: taken["n"]
    batches = iter(loader)
    next(batches), next(batches)  # the second one only fetched ahead
    taken["n"] = 1
    assert loader.state_dict()["batches_done"] == 1


class RecordBatches(Callback):
    """Every training batch's (epoch, index, images, labels), and the loader's saved position."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
        self.positions: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        x, y = batch
        self.batches.append((trainer.current_epoch, batch_idx, x.clone(), y.clone()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loader = trainer.fit_loop._combined_loader.flattened[0]
        self.positions.append((loader.state_dict()["batches_done"], batch_idx + 1))


def fit(data_dir, tmp_path, seed, ckpt_path=None, **trainer_kwargs):
    L.seed_everything(seed)
    dm = make(data_dir, "fashion", batch_size=50, val_size=100, augment=True)  # 10 batches
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    model = ImageClassifier(net, optimizer=partial(torch.optim.SGD, lr=0.05))
    record = RecordBatches()
    checkpoints = ModelCheckpoint(
        dirpath=tmp_path, filename="{step}", every_n_train_steps=2, save_top_k=-1
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=3,
        callbacks=[record, checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **trainer_kwargs,
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return record


@pytest.mark.parametrize("stop", [14, 10])  # mid-epoch, and after an epoch's last batch
def test_a_resumed_fit_continues_with_the_very_next_batch(data_dir, tmp_path, stop):
    whole = fit(data_dir, tmp_path / "whole", seed=0)
    assert len(whole.batches) == 30
    # The saved position is the number of batches consumed by training steps: Lightning 2.6
    # fetches nothing ahead of a loader with a length.
    assert all(saved == consumed for saved, consumed in whole.positions)
    first = fit(data_dir, tmp_path / "first", seed=0, max_steps=stop)
    ckpt = tmp_path / "first" / f"step={stop}.ckpt"
    saved = torch.load(ckpt, weights_only=True)["loops"]["fit_loop"]["state_dict"]
    assert saved["combined_loader"][0]["batches_done"] == (stop - 1) % 10 + 1
    # Another global seed: the permutation's seed comes from the checkpoint.
    second = fit(data_dir, tmp_path / "second", seed=123, ckpt_path=str(ckpt))
    joined = first.batches + second.batches
    assert [(e, i) for e, i, _, _ in joined] == [(e, i) for e, i, _, _ in whole.batches]
    for (_, _, x, y), (_, _, x_ref, y_ref) in zip(joined, whole.batches, strict=True):
        assert torch.equal(y, y_ref) and torch.equal(x, x_ref)


# --- the switch ----------------------------------------------------------------------------


def test_fast_switch(data_dir, image_folder, caplog):
    assert MNISTDataModule(str(data_dir)).use_fast  # auto, the default
    assert not MNISTDataModule(str(data_dir), fast=False).use_fast
    with caplog.at_level("INFO"):
        resized = MNISTDataModule(str(data_dir), val_size=100, image_size=32)
    assert not resized.use_fast and "data.image_size=32 is not MNIST's own size" in caplog.text
    resized.setup()
    assert isinstance(resized.train_dataloader(), DataLoader)
    with pytest.raises(LabError, match="data.fast=true cannot be used: data.image_size=32"):
        MNISTDataModule(str(data_dir), image_size=32, fast=True)
    with pytest.raises(LabError, match="data.fast='yes' is not allowed; use auto, true or false"):
        MNISTDataModule(str(data_dir), fast="yes")
    from datamodules import ImageFolderDataModule

    # An image folder is decoded into memory once where it fits (datamodules/image_folder.py).
    assert ImageFolderDataModule(str(image_folder), fast=True).use_fast
    assert ImageFolderDataModule(str(image_folder)).use_fast


def test_fast_false_keeps_torchvision_loaders(data_dir):
    dm = make(data_dir, "cifar10", val_size=20, fast=False)
    assert all(
        isinstance(loader, DataLoader)
        for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader())
    )


@pytest.mark.parametrize("data", ["mnist", "fashion", "cifar10"])
def test_data_configs_switch_the_fast_path_on(data):
    assert compose_train([f"data={data}"]).data.fast == "auto"


@pytest.mark.parametrize(
    ("experiment", "data"), [("fashion_speedrun", "FashionMNIST"), ("mnist_speedrun", "MNIST")]
)
def test_speedrun_recipes_compose(experiment, data):
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.data._target_.endswith(f"{data}DataModule") and cfg.data.fast is True
    assert cfg.data.val_size == 0 and cfg.scheduler.scheduler._target_.endswith("OneCycleLR")
    assert cfg.scheduler.interval == "step" and cfg.trainer.max_epochs <= 15


def test_lab_trains_on_the_fast_path(train_cfg):
    from train import train

    metrics = train(train_cfg("data=fashion", "data.fast=true", "data.augment=true"))
    assert metrics["status"] == "ok" and 0.0 <= metrics["test/acc"] <= 1.0


# --- the benchmark -------------------------------------------------------------------------


@pytest.mark.slow
def test_speed_benchmark_prints_its_table(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["speed.py"])
    from benchmarks import speed

    speed.main(
        [
            "--data", "mnist", "--data-dir", str(data_dir), "--epochs", "2", "--batch-size", "50",
            "--limit-train-batches", "3", "--device", "cpu", "--no-isolate", "--rounds", "2",
            "--log-dir", str(tmp_path), "--override", "data.verify_checksums=false",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    for row in ("(a) plain DataLoader", "(b) tensors in memory", "(c) lab"):
        assert f"| {row}" in out
    # 2 rounds of 2 epochs per path; the ratios name each round's
    assert "2 round(s) of 2 epochs" in out and out.count("| 4 |") == 3
    assert "(c)/(a) images/s:" in out and "(c)/(b) images/s:" in out and "(rounds: " in out
    assert {p.name for p in tmp_path.iterdir()} >= {"lab", "lab-1"}  # one folder per round


def test_speed_benchmark_time_to_accuracy(data_dir, tmp_path, capsys):
    from benchmarks import speed

    speed.main(
        [
            "--time-to-acc", "0.2", "--experiment", "fashion_lenet5", "--val-size", "100",
            "--data-dir", str(data_dir), "--max-epochs", "3", "--limit-train-batches", "5",
            "--device", "cpu", "--log-dir", str(tmp_path),
            "--override", "data.verify_checksums=false", "--override", "data.batch_size=50",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "| epoch | wall s | val/acc |" in out and "| 1 |" in out
    assert "reached val/acc" in out or "not reached in 3 epochs" in out
