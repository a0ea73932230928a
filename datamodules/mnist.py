"""MNIST and FashionMNIST as LightningDataModules on torchvision's datasets.

Where the files come from, in order: ``data_dir`` in torchvision's layout
(``<data_dir>/MNIST/raw/train-images-idx3-ubyte`` …); for FashionMNIST, Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), unpacked into
``data_dir``; torchvision's download when the network is there. When none works the error names the
folder searched, the files expected and how to get them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import datasets, transforms
from torchvision.datasets.utils import extract_archive

from lightning_models.errors import LabError


def _raw_files(dataset_cls: type[datasets.MNIST]) -> list[str]:
    """Extracted file names torchvision expects in ``<root>/<Name>/raw`` for this dataset."""
    return [os.path.splitext(os.path.basename(url))[0] for url, _md5 in dataset_cls.resources]


class MNISTDataModule(L.LightningDataModule):
    """Handwritten digits, 1x28x28, 60k train / 10k test.

    Args:
        data_dir: root folder in torchvision's layout (the dataset lives in ``<data_dir>/MNIST``).
        batch_size: images per batch, for every stage.
        val_size: images carved out of the training set for validation, by a split seeded with
            ``split_seed`` (fixed across training seeds, so all runs validate on the same images).
            0 means no validation loop, as in the reports.
        num_workers: DataLoader worker processes.
        mean, std: per-channel normalisation after ``ToTensor`` (mean 0, std 1 leaves it as is).
        in_channels, image_size, num_classes: the shape the models are built for. The images are
            resized to ``image_size`` and replicated to 3 channels when ``in_channels=3``.
        download: let torchvision download missing files.
    """

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    debian_dir: Path | None = None  # folder of a Debian package holding the .gz files, if any
    debian_package: str | None = None
    native_size = 28

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: int = 5000,
        num_workers: int = 0,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        split_seed: int = 0,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        download: bool = True,
        pin_memory: bool = False,
    ):
        super().__init__()
        _check_positive_int("data.batch_size", batch_size)
        _check_positive_int("data.image_size", image_size)
        _check_nonnegative_int("data.val_size", val_size)
        _check_nonnegative_int("data.num_workers", num_workers)
        if num_classes != 10:
            raise LabError(f"data.num_classes={num_classes} is wrong: {self.name} has 10 classes")
        if in_channels not in (1, 3):
            raise LabError(f"data.in_channels={in_channels} is not allowed; use 1 or 3")
        for key, values in (("data.mean", mean), ("data.std", std)):
            if len(values) not in (1, in_channels):
                raise LabError(
                    f"{key}={list(values)} needs 1 or {in_channels} values (data.in_channels)"
                )
        if any(s <= 0 for s in std):
            raise LabError(f"data.std={list(std)} must be positive")

        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.val_size = val_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.download = download
        self.pin_memory = pin_memory
        self.transform = self._build_transform(mean, std, in_channels, image_size)
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        self.classes: list[str] = list(self.dataset_cls.classes)

    @property
    def name(self) -> str:
        return self.dataset_cls.__name__

    @property
    def has_validation(self) -> bool:
        return self.val_size > 0

    def _build_transform(self, mean, std, in_channels: int, image_size: int):
        steps: list = []
        if image_size != self.native_size:
            steps.append(transforms.Resize(image_size))
        if in_channels == 3:
            steps.append(transforms.Grayscale(num_output_channels=3))
        steps += [transforms.ToTensor(), transforms.Normalize(tuple(mean), tuple(std))]
        return transforms.Compose(steps)

    # --- finding the files -------------------------------------------------------------------

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / self.name / "raw"

    def _missing_files(self) -> list[str]:
        return [f for f in _raw_files(self.dataset_cls) if not (self.raw_folder / f).is_file()]

    def prepare_data(self) -> None:
        """Put the extracted files in ``data_dir``, or raise one clear error saying how to."""
        if not self._missing_files():
            return
        found = self._unpack_from_debian() or self._try_download()
        if not (found and not self._missing_files()):
            raise LabError(self._not_found_message())

    def _unpack_from_debian(self) -> bool:
        if self.debian_dir is None:
            return False
        archives = [self.debian_dir / f"{f}.gz" for f in _raw_files(self.dataset_cls)]
        if not all(a.is_file() for a in archives):
            return False
        self.raw_folder.mkdir(parents=True, exist_ok=True)
        for archive in archives:
            extract_archive(str(archive), str(self.raw_folder))
        return True

    def _try_download(self) -> bool:
        if not self.download:
            return False
        try:
            for train in (True, False):
                self.dataset_cls(str(self.data_dir), train=train, download=True)
        except (RuntimeError, OSError):
            # torchvision has already printed each mirror it tried; our error below says what to do.
            return False
        return True

    def _not_found_message(self) -> str:
        where = f"{self.raw_folder}"
        if self.debian_dir is not None:
            where += f" or {self.debian_dir} (Debian package {self.debian_package})"
        hints = "point paths.data_dir (or the LAB_DATA_DIR environment variable) at a folder "
        hints += f"holding {self.name}/raw/ with these files"
        if self.debian_package:
            hints += f", or install them with 'apt-get install {self.debian_package}'"
        hints += ", or run once with network access so torchvision can download them"
        return (
            f"{self.name} files not found: searched {where} for "
            f"{', '.join(self._missing_files())}; {hints}"
        )

    # --- datasets and loaders ----------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.data_test is not None:  # train.py sets up early to check the data; do it once
            return
        root = str(self.data_dir)
        full = self.dataset_cls(root, train=True, transform=self.transform)
        if self.val_size >= len(full):
            raise LabError(
                f"data.val_size={self.val_size} is not smaller than the {self.name} training set "
                f"({len(full)} images); use a value from 0 to {len(full) - 1}"
            )
        generator = torch.Generator().manual_seed(self.split_seed)
        if self.val_size:
            self.data_train, self.data_val = random_split(
                full, [len(full) - self.val_size, self.val_size], generator=generator
            )
        else:
            self.data_train = full
        self.data_test = self.dataset_cls(root, train=False, transform=self.transform)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
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

    def val_dataloader(self) -> DataLoader:
        if self.data_val is None:
            raise LabError("this run has no validation set (data.val_size=0)")
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, shuffle=False)


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's FashionMNIST: 1x28x28 clothing images, 10 classes, 60k train / 10k test."""

    dataset_cls = datasets.FashionMNIST
    debian_dir = Path("/usr/share/datasets/fashion-mnist")
    debian_package = "dataset-fashion-mnist"


def _check_positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LabError(f"{key}={value!r} is not allowed; use a whole number of at least 1")


def _check_nonnegative_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise LabError(f"{key}={value!r} is not allowed; use a whole number of at least 0")
