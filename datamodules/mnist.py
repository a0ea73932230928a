"""MNIST and FashionMNIST as LightningDataModules on torchvision's datasets.

Where the files come from, in order: ``data_dir`` in torchvision's layout
(``<data_dir>/MNIST/raw/train-images-idx3-ubyte`` …); for FashionMNIST, Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), unpacked into
``data_dir``; torchvision's download when the network is there. When none works the error names the
folder searched, the files expected and how to get them.

With ``data.fast`` (default ``auto``) and the native 28x28 size, training, validation and test
batches come from the images held as one uint8 tensor on the training device
(:mod:`datamodules.in_memory`); ``image_size`` other than 28 uses torchvision's loaders.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

from torchvision import datasets, transforms

from datamodules.base import ImageDataModule, try_download
from datamodules.checksums import FASHION_MNIST_MD5, MNIST_MD5, verify_files
from datamodules.in_memory import from_mnist
from lightning_models.checks import LabError, check_bool
from lightning_models.files import atomic_file


def _raw_files(dataset_cls: type[datasets.MNIST]) -> list[str]:
    """Extracted file names torchvision expects in ``<root>/<Name>/raw`` for this dataset."""
    return [os.path.splitext(os.path.basename(url))[0] for url, _md5 in dataset_cls.resources]


class MNISTDataModule(ImageDataModule):
    """Handwritten digits, 1x28x28, 60k train / 10k test.

    Takes :class:`~datamodules.base.ImageDataModule`'s arguments; ``data_dir`` is in
    torchvision's layout (the dataset lives in ``<data_dir>/MNIST``). Images are resized to
    ``image_size`` and replicated to 3 channels when ``in_channels=3``. ``download`` lets
    torchvision fetch missing files; ``verify_checksums`` refuses files whose MD5 is not the
    original's (a truncated or corrupted copy). ``augment`` shifts training images by up to
    ``max_shift`` pixels (and mirrors them where that keeps the label: clothes, not digits);
    validation and test images are never augmented. ``fast``: see
    :class:`~datamodules.base.ImageDataModule` (the fast path shifts and mirrors the same way).
    """

    dataset_cls: type[datasets.MNIST] = datasets.MNIST
    debian_dir: Path | None = None  # folder of a Debian package holding the .gz files, if any
    debian_package: str | None = None
    native_size = 28
    dataset_classes = 10
    md5 = MNIST_MD5
    mirror_keeps_label = False  # a mirrored 2 or 7 is no digit
    in_memory_dataset = True

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: int = 5000,
        download: bool = True,
        augment: bool = False,
        max_shift: int = 2,
        verify_checksums: bool = True,
        **kwargs,
    ):
        super().__init__(data_dir, batch_size, val_size, **kwargs)
        self.augmentation = self.augmentation_from(augment, max_shift, self.mirror_keeps_label)
        check_bool("data.verify_checksums", verify_checksums)
        self.verify_checksums = verify_checksums
        self.download = download
        self.classes = list(self.dataset_cls.classes)
        steps: list = []
        if self.image_size != self.native_size:
            steps.append(transforms.Resize(self.image_size))
        if self.in_channels == 3:
            steps.append(transforms.Grayscale(num_output_channels=3))
        self.transform = transforms.Compose([*steps, transforms.ToTensor(), self.normalize])
        # On the 28x28 original, before any resize (as on the fast path, which never resizes).
        moves = self.augmentation.transforms(self.native_size)
        self.train_transform = transforms.Compose([*moves, self.transform])

    @property
    def name(self) -> str:
        return self.dataset_cls.__name__

    # --- finding the files -------------------------------------------------------------------

    @property
    def raw_folder(self) -> Path:
        return Path(self.data_dir) / self.name / "raw"

    def _missing_files(self) -> list[str]:
        return [f for f in _raw_files(self.dataset_cls) if not (self.raw_folder / f).is_file()]

    def prepare_data(self) -> None:
        """Put the extracted files in ``data_dir`` and check them, or raise one clear error
        saying how to."""
        if self._missing_files():
            found = self._unpack_from_debian() or self._try_download()
            if not (found and not self._missing_files()):
                raise LabError(self._not_found_message())
        if self.verify_checksums:
            verify_files(self.raw_folder, self.md5, self.name, self._repair_hint())

    def _repair_hint(self) -> str:
        source = "torchvision downloads it (network needed)"
        if self.debian_package:
            source = (
                f"the lab unpacks Debian's copy again (damaged too? 'apt-get install --reinstall "
                f"{self.debian_package}') or {source}"
            )
        return (
            f"delete {self.raw_folder} and run again: {source}; "
            "data.verify_checksums=false accepts a modified copy"
        )

    def _unpack_from_debian(self) -> bool:
        if self.debian_dir is None:
            return False
        archives = [self.debian_dir / f"{f}.gz" for f in _raw_files(self.dataset_cls)]
        if not all(a.is_file() for a in archives):
            return False
        self.raw_folder.mkdir(parents=True, exist_ok=True)
        for archive in archives:
            # Jobs of a parallel sweep unpacking at once never read half a file.
            target = self.raw_folder / archive.stem
            with gzip.open(archive, "rb") as packed, atomic_file(target) as unpacked:
                shutil.copyfileobj(packed, unpacked)
        return True

    def _try_download(self) -> bool:
        return self.download and try_download(self.dataset_cls, self.data_dir, (True, False))

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

    # --- datasets ----------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.data_test is not None:  # train.py sets up early to check the data; do it once
            return
        root = str(self.data_dir)
        train_view = self.dataset_cls(root, train=True, transform=self.train_transform)
        eval_view = self.dataset_cls(root, train=True, transform=self.transform)
        self.split(train_view, eval_view)
        self.data_test = self.dataset_cls(root, train=False, transform=self.transform)
        if self.use_fast:
            self.hold_in_memory(from_mnist(train_view), from_mnist(self.data_test))


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's FashionMNIST: 1x28x28 clothing images, 10 classes, 60k train / 10k test."""

    dataset_cls = datasets.FashionMNIST
    debian_dir = Path("/usr/share/datasets/fashion-mnist")
    debian_package = "dataset-fashion-mnist"
    mirror_keeps_label = True
    md5 = FASHION_MNIST_MD5
