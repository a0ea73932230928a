"""CIFAR-10 as a LightningDataModule on torchvision's dataset (its pickle reading, its download).

Where the files come from, in order: ``data_dir`` in torchvision's layout
(``<data_dir>/cifar-10-batches-py/data_batch_1`` … ``test_batch``, ``batches.meta``); torchvision's
download when the network is there. When neither works the error names the folder searched, the
files expected and how to get them. MD5 sums are checked only with ``verify_checksums``.

With ``data.fast`` (default ``auto``) and the native 32x32 size, training, validation and test
batches come from the images held as one uint8 tensor (N, 3, 32, 32; made grey once, as PIL does,
for ``in_channels=1``) on the training device (:mod:`datamodules.in_memory`); another
``image_size`` uses torchvision's loaders.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from torchvision import datasets, transforms
from torchvision.datasets.vision import StandardTransform

from datamodules.base import ImageDataModule, try_download
from datamodules.checksums import verify_files
from datamodules.in_memory import from_cifar
from lightning_models.checks import LabError, check_bool
from lightning_models.files import atomic_file

# The names batches.meta holds, known before any file is read (e.g. to label predictions).
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Per-channel statistics of the CIFAR-10 training set: report 002's normalisation.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.247, 0.243, 0.261)


class CIFAR10Dataset(datasets.CIFAR10):
    """torchvision's CIFAR10, whose MD5 checks only run when ``verify_checksums`` is true.

    Without it, torchvision's integrity checks still require every file to be there, so a missing
    batch fails as before, but copies that are not byte-identical to the original (a re-pickled
    set, generated test files) load.
    """

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Callable | None = None,
        download: bool = False,
        verify_checksums: bool = False,
    ):
        if not verify_checksums:
            # torchvision's check_integrity(path, md5=None) only checks that the file exists.
            self.train_list = [[name, None] for name, _md5 in self.train_list]
            self.test_list = [[name, None] for name, _md5 in self.test_list]
            self.meta = {**self.meta, "md5": None}
        super().__init__(root, train=train, transform=transform, download=download)


def expected_md5() -> dict[str, str]:
    """File name → MD5 of the original CIFAR-10 files, as torchvision lists them."""
    base = datasets.CIFAR10
    sums = {name: md5 for name, md5 in base.train_list + base.test_list}
    sums[base.meta["filename"]] = base.meta["md5"]
    return sums


def with_transform(dataset: datasets.CIFAR10, transform: Callable) -> datasets.CIFAR10:
    """The same images and labels (shared, not re-read: 150 MB for CIFAR-10) with ``transform``.

    The validation subset is taken from this view, so it comes without the training augmentation.
    """
    view = copy.copy(dataset)
    view.transform = transform
    view.transforms = StandardTransform(transform, dataset.target_transform)
    return view


class CIFAR10DataModule(ImageDataModule):
    """Tiny colour images, 3x32x32, 10 classes, 50k train / 10k test.

    Takes :class:`~datamodules.base.ImageDataModule`'s arguments, with CIFAR-10's defaults
    (reports 002 and 003); ``data_dir`` is in torchvision's layout (the dataset lives in
    ``<data_dir>/cifar-10-batches-py``). Images are resized to ``image_size`` and made grey when
    ``in_channels=1`` (``mean`` and ``std`` then take one value each).

    Args:
        download: let torchvision fetch missing files.
        augment: random 32x32 crops of the ``max_shift``-pixel padded image (default 4) and
            horizontal flips, on the training subset only; validation and test images are never
            augmented.
        verify_checksums: check the files' MD5 sums against the original CIFAR-10.
        fast: see :class:`~datamodules.base.ImageDataModule` (the fast path crops and flips the
            same way).
    """

    dataset_cls: type[datasets.CIFAR10] = CIFAR10Dataset
    native_size = 32
    dataset_classes = 10
    in_memory_dataset = True

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        val_size: int = 1000,
        download: bool = True,
        augment: bool = False,
        max_shift: int = 4,
        verify_checksums: bool = True,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        in_channels: int = 3,
        image_size: int = 32,
        **kwargs,
    ):
        super().__init__(
            data_dir,
            batch_size,
            val_size,
            mean=mean,
            std=std,
            in_channels=in_channels,
            image_size=image_size,
            **kwargs,
        )
        self.augmentation = self.augmentation_from(augment, max_shift, mirror=True)
        check_bool("data.verify_checksums", verify_checksums)
        self.download = download
        self.classes = list(CIFAR10_CLASSES)  # setup() reads them from batches.meta
        self.verify_checksums = verify_checksums
        self.eval_transform = transforms.Compose(self._to_model_input())
        # The usual CIFAR augmentation, on the 32x32 original before any resize (as on the fast
        # path, which never resizes).
        moves = self.augmentation.transforms(self.native_size)
        self.train_transform = transforms.Compose([*moves, *self._to_model_input()])

    def _to_model_input(self) -> list:
        steps: list = []
        if self.image_size != self.native_size:
            steps.append(transforms.Resize(self.image_size))
        if self.in_channels == 1:
            steps.append(transforms.Grayscale(num_output_channels=1))
        return [*steps, transforms.ToTensor(), self.normalize]

    # --- finding the files -------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / self.dataset_cls.base_folder

    def _missing_files(self) -> list[str]:
        return [f for f in expected_md5() if not (self.folder / f).is_file()]

    def prepare_data(self) -> None:
        """Make sure the files are in ``data_dir``, or raise one clear error saying how to."""
        if self._missing_files() and not (self._try_download() and not self._missing_files()):
            raise LabError(self._not_found_message())

    def _try_download(self) -> bool:
        return self.download and try_download(self.dataset_cls, self.data_dir)

    def _not_found_message(self) -> str:
        hints = "point paths.data_dir (or the LAB_DATA_DIR environment variable) at a folder "
        hints += f"holding {self.dataset_cls.base_folder}/ with these files, or run once with "
        hints += "network access (data.download=true) so torchvision can download them"
        return (
            f"{self.name} files not found: searched {self.folder} for "
            f"{', '.join(self._missing_files())}; {hints}"
        )

    def _check_files(self) -> None:
        """Every file there and, with ``verify_checksums``, the original one, or a LabError."""
        if self._missing_files():
            raise LabError(self._not_found_message())
        if self.verify_checksums:
            repair = (
                f"delete {self.folder} and run again with network access so torchvision "
                "downloads it anew, or copy the files again; data.verify_checksums=false skips "
                "this check for a modified copy"
            )
            verify_files(self.folder, expected_md5(), self.name, repair)

    # --- datasets ----------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.data_test is not None:  # train.py sets up early to check the data; do it once
            return
        self._check_files()
        root = str(self.data_dir)
        # Checksums were checked above, once, naming the bad file; the datasets only read.
        train_view = self.dataset_cls(root, train=True, transform=self.train_transform)
        self.split(train_view, with_transform(train_view, self.eval_transform))
        self.data_test = self.dataset_cls(root, train=False, transform=self.eval_transform)
        self.classes = list(self.data_test.classes)
        if self.use_fast:
            grey = self.in_channels == 1
            self.hold_in_memory(
                from_cifar(train_view, grey=grey), from_cifar(self.data_test, grey=grey)
            )


def write_batches_from_folder(folder: Path | str, out_dir: Path | str, seed: int = 0) -> Path:
    """Write a folder of CIFAR-10 images (``train/<class>/*`` and ``test/<class>/*``, such as the
    JPEG copy of CIFAR-10) as ``<out_dir>/cifar-10-batches-py`` in CIFAR-10's own format, so
    ``data=cifar10`` (its 49k / 1k split and in-memory fast path) trains on it with
    ``data.verify_checksums=false``. Returns the batches folder; one already complete is kept.

    Images are decoded by PIL (as ``data=imagefolder`` decodes them), in CIFAR-10's class order
    (``batches.meta``); the training images are spread over the five batch files in a seeded
    order, as the original files are not sorted by class.
    """
    from PIL import Image

    folder, target = Path(folder), Path(out_dir) / CIFAR10Dataset.base_folder
    files = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    if all((target / name).is_file() for name in files):
        return target
    split_images: dict[str, tuple[np.ndarray, list[int], list[str]]] = {}
    for split in ("train", "test"):
        pixels, labels, names = [], [], []
        for label, name in enumerate(CIFAR10_CLASSES):
            class_dir = folder / split / name
            if not class_dir.is_dir():
                raise LabError(
                    f"{class_dir} is missing: a CIFAR-10 image folder has train/ and test/, each "
                    f"with one folder per class ({', '.join(CIFAR10_CLASSES)})"
                )
            for path in sorted(class_dir.iterdir()):
                with Image.open(path) as image:
                    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
                if rgb.shape != (32, 32, 3):
                    raise LabError(f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, not 32x32")
                pixels.append(rgb.transpose(2, 0, 1).reshape(-1))  # R, G, B planes, as CIFAR-10
                labels.append(label)
                names.append(f"{name}/{path.name}")
        order = np.random.default_rng(seed).permutation(len(labels)) if split == "train" else None
        data = np.stack(pixels)
        if order is not None:
            data, labels, names = data[order], [labels[i] for i in order], [names[i] for i in order]
        split_images[split] = (data, labels, names)
    target.mkdir(parents=True, exist_ok=True)

    def dump(name: str, entry: dict) -> None:
        with atomic_file(target / name) as f:  # a killed conversion leaves no half a batch
            pickle.dump(entry, f, protocol=2)

    data, labels, names = split_images["train"]
    for i, chunk in enumerate(np.array_split(np.arange(len(labels)), 5), start=1):
        dump(
            f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "labels": [labels[k] for k in chunk],
                "data": data[chunk],
                "filenames": [names[k] for k in chunk],
            },
        )
    data, labels, names = split_images["test"]
    dump(
        "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": labels,
            "data": data,
            "filenames": names,
        },
    )
    dump(
        "batches.meta",
        {
            "label_names": list(CIFAR10_CLASSES),
            "num_cases_per_batch": 10000,
            "num_vis": 3072,
        },
    )
    return target
