"""What every ``data=`` choice shares: argument checks, the seeded validation split, the loaders.

Subclasses find their files (``prepare_data``) and build the full training and test datasets
(``setup``); the split and the DataLoaders are made here once for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms

from lightning_models.errors import LabError


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
    """

    dataset_classes: int | None = None  # fixed by the dataset (10 for MNIST), else None

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
    ):
        super().__init__()
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

        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_size = val_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.pin_memory = pin_memory
        self.normalize = transforms.Normalize(tuple(mean), tuple(std))
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        self.classes: list[str] = []

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("DataModule")

    @property
    def has_validation(self) -> bool:
        return self.val_size > 0

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
            return
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        self.data_train = Subset(train_view, order[: n - n_val].tolist())
        self.data_val = Subset(
            eval_view if eval_view is not None else train_view, order[n - n_val :].tolist()
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

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        # No loader means no validation loop (Lightning skips it), also under fast_dev_run.
        return self._loader(self.data_val, shuffle=False) if self.has_validation else []

    def test_dataloader(self) -> DataLoader:
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
