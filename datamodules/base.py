"""What every ``data=`` choice shares: argument checks, the seeded validation split, the loaders.

Subclasses find their files (``prepare_data``) and build the full training and test datasets
(``setup``); the split and the loaders are made here once for all of them.

Two kinds of loaders: torchvision's ``DataLoader`` over the datasets (any dataset, any transform),
and, for datasets held in memory (MNIST, FashionMNIST, CIFAR-10) at their own image size, the fast
path of :mod:`datamodules.in_memory` (``data.fast``): the images as one ``uint8`` tensor on the
training device, batched, normalised and augmented there, with the same split, values and
augmentation semantics. ``data.fast=auto`` (the default) takes it where it applies, ``true``
insists (a LabError says why it cannot), ``false`` keeps torchvision's loaders. On the fast path
``num_workers`` and ``pin_memory`` are ignored (there is no worker and no host-to-device copy per
batch), and ``data_train``/``data_val``/``data_test`` are still torchvision's datasets (for
inspection, predictions and figures); only the loaders differ.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from datamodules.in_memory import (
    BatchMaker,
    InMemoryImages,
    OrderedBatches,
    ShuffledBatches,
    process_share,
    shared_seed,
)
from datamodules.in_memory import check_fast as _check_fast
from lightning_models.errors import LabError

log = logging.getLogger(__name__)


class ImageDataModule(L.LightningDataModule):
    """Base of the lab's datamodules.

    Args:
        data_dir: folder the dataset lives in.
        batch_size: images per batch, for every stage.
        val_size: images carved out of the training set for validation (a count, or a fraction
            between 0 and 1 of it), by a split seeded with ``split_seed`` (fixed across training
            seeds, so all runs validate on the same images). 0 means no validation loop, as in
            the reports.
        num_workers: DataLoader worker processes.
        mean, std: per-channel normalisation after ``ToTensor`` (mean 0, std 1 leaves it as is).
        in_channels, image_size, num_classes: the shape the models are built for.
        pin_memory: pin host memory for faster copies to a GPU.
        fast: ``auto``, ``true`` or ``false``: the in-memory fast path (module docstring) where
            it applies, always (else a LabError saying why not), or never.
        shuffle: a new order of the training images every epoch (seeded by the run's seed);
            false keeps the training set's own order every epoch, as report 004's loader did.
    """

    dataset_classes: int | None = None  # fixed by the dataset (10 for MNIST), else None
    in_memory_dataset = False  # torchvision holds every image in memory: the fast path applies
    native_size: int | None = None  # the dataset's own image size, when it has one

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        val_size: int | float,
        num_workers: int = 0,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        split_seed: int = 0,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        pin_memory: bool = False,
        fast: bool | str = "auto",
        shuffle: bool = True,
    ):
        super().__init__()
        check_bool("data.shuffle", shuffle)
        check_int("data.batch_size", batch_size, minimum=1)
        check_int("data.image_size", image_size, minimum=1)
        check_int("data.num_classes", num_classes, minimum=2)
        if not (isinstance(val_size, float) and 0 < val_size < 1):
            check_int("data.val_size", val_size, minimum=0, or_fraction=True)
        check_int("data.num_workers", num_workers, minimum=0)
        if self.dataset_classes is not None and num_classes != self.dataset_classes:
            raise LabError(
                f"data.num_classes={num_classes} is wrong: {self.name} has "
                f"{self.dataset_classes} classes"
            )
        if in_channels not in (1, 3):
            raise LabError(f"data.in_channels={in_channels} is not allowed; use 1 or 3")
        allowed = "1 value" if in_channels == 1 else f"1 value or {in_channels}, one per channel"
        for key, values in (("data.mean", mean), ("data.std", std)):
            if len(values) not in (1, in_channels):
                raise LabError(
                    f"{key}={list(values)} is not allowed with data.in_channels={in_channels}; "
                    f"give {allowed}"
                )
        if any(s <= 0 for s in std):
            raise LabError(f"data.std={list(std)} must be positive")
        _check_fast(fast)

        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_size = val_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.pin_memory = pin_memory
        self.shuffle = shuffle
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.normalize = transforms.Normalize(self.mean, self.std)
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        self.classes: list[str] = []
        # Fast path: whether it is used, the training-time augmentation it applies (subclasses
        # set these from their own options), the split as row indices, and the tensors.
        self.use_fast = self._resolve_fast(fast)
        self.fast_max_shift = 0
        self.fast_mirror = False
        self.train_rows: torch.Tensor | None = None  # rows of the training file; None: all
        self.val_rows: torch.Tensor | None = None
        self._memory: tuple[InMemoryImages, InMemoryImages] | None = None  # (train file, test)
        self._on_device: tuple[torch.device, InMemoryImages, InMemoryImages] | None = None
        # The fast train loader's place, saved with the datamodule in checkpoints (see
        # state_dict) and handed to the next train loader made after a restore.
        self._train_loader: ShuffledBatches | None = None
        self._train_resume: dict[str, int] | None = None

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("DataModule")

    @property
    def has_validation(self) -> bool:
        return self.val_size > 0

    # --- fast path ---------------------------------------------------------------------------

    def fast_unavailable(self) -> str | None:
        """Why the fast path cannot be used with these options, or None when it can."""
        if not self.in_memory_dataset:
            return (
                f"{self.name} reads its images from files; only MNIST, FashionMNIST and CIFAR-10 "
                "are held in memory"
            )
        if self.image_size != self.native_size:
            return (
                f"data.image_size={self.image_size} is not {self.name}'s own size "
                f"({self.native_size}), and resizing is done on the torchvision path only"
            )
        return None

    def _resolve_fast(self, fast: bool | str) -> bool:
        reason = self.fast_unavailable()
        if fast is True and reason is not None:
            raise LabError(f"data.fast=true cannot be used: {reason}; use data.fast=auto or false")
        if fast == "auto" and reason is not None and self.in_memory_dataset:
            log.info("data.fast=auto: %s; using torchvision's DataLoader", reason)
        return fast is not False and reason is None

    def hold_in_memory(self, train: InMemoryImages, test: InMemoryImages) -> None:
        """Keep the whole training file and the test set as tensors for the fast path (on the
        CPU until a loader is asked for on a trainer's device). Subclasses call it in setup."""
        self._memory = (train, test)
        ignored = [f"data.{k}" for k in ("num_workers", "pin_memory") if getattr(self, k)]
        log.info(
            "data.fast: %s held in memory (%d + %d images, %.1f MB), batched on the training "
            "device%s",
            self.name,
            len(train),
            len(test),
            (train.nbytes + test.nbytes) / 2**20,
            f"; {' and '.join(ignored)} ignored" if ignored else "",
        )

    def _fast_ready(self) -> bool:
        # Under DDP too: each process batches its own share (datamodules/in_memory.py).
        return self.use_fast and self._memory is not None

    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _memory_on_device(self) -> tuple[InMemoryImages, InMemoryImages]:
        device = self._device()
        if self._on_device is None or self._on_device[0] != device:
            assert self._memory is not None
            self._on_device = None  # release the copy on the previous device first
            train, test = self._memory
            self._on_device = (device, train.to(device), test.to(device))
            log.info("data.fast: %s images on %s", self.name, device)
        return self._on_device[1], self._on_device[2]

    def _batch_maker(self, train: bool) -> BatchMaker:
        return BatchMaker(
            self.mean,
            self.std,
            self.in_channels,
            max_shift=self.fast_max_shift if train else 0,
            mirror=self.fast_mirror if train else False,
        )

    def _fast_train_loader(self) -> ShuffledBatches:
        train, _ = self._memory_on_device()
        trainer = self.trainer
        epoch_source = position_source = None
        if trainer is not None:
            # The trainer's epoch drives the permutation; its count of batches taken for training
            # steps is the position a checkpoint saves (never a batch fetched ahead).
            def epoch_source() -> int:
                return trainer.current_epoch

            def position_source() -> int:
                return trainer.fit_loop.epoch_loop.batch_progress.current.ready

        loader = ShuffledBatches(
            train,
            self.batch_size,
            self._batch_maker(train=True),
            # the run's seed after seed_everything(seed), read without drawing from the RNG
            seed=shared_seed(trainer),
            rows=self.train_rows,
            epoch_source=epoch_source,
            position_source=position_source,
            shuffle=self.shuffle,
            **process_share(trainer),
        )
        if self._train_resume is not None:
            loader.load_state_dict(self._train_resume)
            self._train_resume = None
        self._train_loader = loader
        return loader

    def state_dict(self) -> dict[str, dict[str, int]]:
        """Where the fast train loader is, for checkpoints (Lightning saves the datamodule's
        state with them and restores it before the model's optimizers are configured).

        Lightning also saves the loader's own state with its fit loop, but puts it back only
        when the fit loop builds the train loader after the restore; a model that asks for
        ``trainer.estimated_stepping_batches`` while its optimizers are configured (one-cycle
        schedules do) has the loader built before, and a resumed epoch would start again at
        its first batch (Lightning issue 20550). Restored from here, the loader continues with
        the next batch either way.
        """
        if self._train_loader is None:
            return {}
        return {"train_batches": self._train_loader.state_dict()}

    def load_state_dict(self, state_dict: dict[str, dict[str, int]]) -> None:
        self._train_resume = state_dict.get("train_batches")

    def split(self, train_view: Dataset, eval_view: Dataset | None = None) -> None:
        """Carve ``val_size`` images out of the training set, the same ones for every seed.

        ``eval_view`` is the same images with evaluation transforms (no augmentation); the
        validation subset is taken from it.
        """
        n = len(train_view)
        n_val = (
            max(1, round(self.val_size * n)) if isinstance(self.val_size, float) else self.val_size
        )
        if n_val >= n:
            raise LabError(
                f"data.val_size={self.val_size} is not smaller than the {self.name} training set "
                f"({n} images); use a value from 0 to {n - 1}"
            )
        if not n_val:
            self.data_train = train_view
            self.train_rows = self.val_rows = None
            return
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        self.train_rows, self.val_rows = order[: n - n_val], order[n - n_val :]
        self.data_train = Subset(train_view, self.train_rows.tolist())
        self.data_val = Subset(
            eval_view if eval_view is not None else train_view, self.val_rows.tolist()
        )

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise LabError(f"{self.name} is not set up: call prepare_data() and setup() first")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader | ShuffledBatches:
        if self._fast_ready():
            return self._fast_train_loader()
        return self._loader(self.data_train, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader | OrderedBatches | list:
        # No loader means no validation loop (Lightning skips it), also under fast_dev_run.
        if not self.has_validation:
            return []
        if self._fast_ready():
            train, _ = self._memory_on_device()
            return OrderedBatches(
                train,
                self.batch_size,
                self._batch_maker(False),
                self.val_rows,
                **process_share(self.trainer),
            )
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader | OrderedBatches:
        if self._fast_ready():
            _, test = self._memory_on_device()
            return OrderedBatches(
                test, self.batch_size, self._batch_maker(train=False), **process_share(self.trainer)
            )
        return self._loader(self.data_test, shuffle=False)


def check_int(key: str, value, minimum: int, or_fraction: bool = False) -> None:
    """Reject anything but a whole number >= ``minimum``, naming the config key."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"a whole number of at least {minimum}"
        if or_fraction:
            allowed += " or a fraction between 0 and 1"
        raise LabError(f"{key}={value!r} is not allowed; use {allowed}")


def check_bool(key: str, value) -> None:
    """Reject anything but true/false: a string such as 'no' would be truthy and switch it on."""
    if not isinstance(value, bool):
        raise LabError(f"{key}={value!r} is not allowed; use true or false")


def shift_and_mirror(size: int, max_shift: int, mirror: bool) -> list:
    """Training-time augmentation: random shifts by up to ``max_shift`` pixels (a ``size`` crop of
    the padded image) and, when ``mirror``, horizontal flips."""
    check_int("data.max_shift", max_shift, minimum=0)
    moves: list = []
    if max_shift:
        moves.append(transforms.RandomCrop(size, padding=max_shift))
    if mirror:
        moves.append(transforms.RandomHorizontalFlip())
    return moves


def try_download(dataset_cls: type, data_dir: str, splits: Sequence[bool] = (True,)) -> bool:
    """Let torchvision download ``dataset_cls`` (``train=`` each of ``splits``); False when it
    cannot. Offline that fails at once; torchvision prints each mirror it tried, and the caller's
    error then says what to do."""
    try:
        for train in splits:
            dataset_cls(str(data_dir), train=train, download=True)
    except (RuntimeError, OSError):  # URLError is an OSError
        return False
    return True
