"""Any folder of class sub-folders of images (``data=imagefolder``), on torchvision's ImageFolder.

Two layouts, told apart by a ``train/`` folder in ``root``:

- ``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg`` (optionally ``root/val/<class>/``):
  the folder's own split; without ``val/`` the validation images are carved out of ``train/`` by
  the base's seeded ``split``.
- ``root/<class>/*.png``: one pool, split by ``split_seed`` into test (``test_size``), then
  validation (``val_size``) and training.

Class names are the sub-folder names, sorted as ImageFolder sorts them. Model configs interpolate
``${data.num_classes}`` when the config is composed, before any datamodule exists, so importing this
module registers the OmegaConf resolver ``lab.count_classes`` that counts them from the folder.

Two paths from the files to the model, with the same images, split, values and augmentation:

- In memory (``data.fast=auto``, the default, or ``true``), when the decoded images fit
  ``data.max_memory_mb``: in ``setup`` every file is opened with the PIL path's loader, resized by
  the PIL path's own ``Resize`` and kept as ``uint8`` (``N x C x image_size x image_size``, train,
  validation and test together), decoded once, in ``data.num_workers`` worker processes (chunks of
  files each). From there :mod:`datamodules.in_memory` batches, normalises and augments on the
  training device exactly as for CIFAR-10, with no PIL and no worker per epoch: decoding a folder
  again every epoch is what made the loader path slower than CIFAR-10's in-memory batches on the
  same images. With ``data.cache_dir`` the decoded array is also saved there, under a name hashed
  from the folder's file list, sizes and modification times, ``image_size`` and the channels, so
  the next run on the unchanged folder loads it in seconds instead of decoding it again.
- torchvision's loaders (``data.fast=false``, or ``auto`` on a folder too big for the budget, which
  a log line then says): each image decoded, resized and normalised by a ``DataLoader`` every
  time it is used, any folder size. ``data.fast=true`` on a folder too big is a LabError.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from datamodules.base import ImageDataModule, count_of
from datamodules.in_memory import InMemoryImages, use_fast_path
from lightning_models.checks import (
    LabError,
    check_bool,
    check_int,
    check_writable,
    is_fraction,
    is_whole,
)
from lightning_models.files import atomic_file

log = logging.getLogger(__name__)

RESOLVER = "lab.count_classes"
SPLIT_FOLDERS = ("train", "val", "test")
LAYOUT_HINT = (
    "class sub-folders of images (<root>/<class>/*.jpg, or train/<class>/ and test/<class>/)"
)
# What PIL raises on a file that is not an image, is truncated or is absurdly large.
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# --- finding the classes (shared by the resolver and the datamodule) --------------------------


def _visible(path: Path) -> bool:
    # Hidden entries are tool litter, not data: .ipynb_checkpoints/, macOS's ._photo.jpg forks.
    return not path.name.startswith(".")


def is_image_file(path: str) -> bool:
    """An image extension ImageFolder accepts, on a file that is not hidden."""
    return _visible(Path(path)) and has_file_allowed_extension(path, IMG_EXTENSIONS)


def class_names(folder: Path) -> list[str]:
    """The class sub-folders of ``folder``, sorted as ImageFolder sorts them."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and _visible(p))
    except OSError as err:  # e.g. no permission; a LabError also passes through the resolver
        raise LabError(f"cannot list the folder {folder} ({err}); check its permissions") from None


def split_folders(root: str | Path) -> dict[str, Path]:
    """Split name → folder of class folders: train/test[/val] when ``root`` has ``train/``, else
    ``{"all": root}``; raises LabError when ``root`` is no such folder."""
    path = Path(root).expanduser()
    if not path.exists():
        raise LabError(
            f"data.root={path} does not exist; point data.root at a folder of {LAYOUT_HINT}"
        )
    if not path.is_dir():
        raise LabError(f"data.root={path} is a file; point data.root at a folder of {LAYOUT_HINT}")
    if not (path / "train").is_dir():
        return {"all": path}
    if not (path / "test").is_dir():
        raise LabError(
            f"{path} has a train/ folder but no test/ folder; add test/<class>/ folders beside it, "
            f"or put the class folders directly in {path} for a seeded split"
        )
    return {name: path / name for name in SPLIT_FOLDERS if (path / name).is_dir()}


def find_classes(root: str | Path) -> list[str]:
    """The class names of ``root`` in either layout, checked: at least two, the same in every
    split folder."""
    folders = split_folders(root)
    first = folders.get("train", folders.get("all"))
    classes = class_names(first)
    if not classes:
        raise LabError(
            f"{first} has no class sub-folders; put the images of each class in a sub-folder "
            f"named after it, as {LAYOUT_HINT}"
        )
    if len(classes) == 1:
        raise LabError(
            f"{first} has one class folder ({classes[0]}); a classifier needs at least two, so "
            "add a sub-folder of images for every other class"
        )
    for folder in folders.values():
        other = class_names(folder)
        if other != classes:
            missing = sorted(set(classes) - set(other)) or "none"
            extra = sorted(set(other) - set(classes)) or "none"
            raise LabError(
                f"the class folders of {folder} differ from those of {first} (missing: {missing}; "
                f"extra: {extra}); give train/, test/ and val/ the same class sub-folders"
            )
    return classes


# --- the resolver -------------------------------------------------------------------------------


class _ResolverLabError(LabError, InterpolationResolutionError):
    """A LabError raised inside a resolver that reaches the user as itself.

    OmegaConf wraps any other exception a resolver raises in an InterpolationResolutionError
    ("LabError raised while resolving interpolation: ...", the LabError only in ``__context__``),
    which train.py would print as a stack trace. An InterpolationResolutionError it re-raises
    unchanged, and ``_initialized`` tells it not to append ``full_key: ...`` to our sentence.
    """

    _initialized = True


def count_classes(root: str | None = None, *, _parent_: Any = None) -> int:
    """``${lab.count_classes:PATH}``, or ``${lab.count_classes:}`` beside a ``root`` key.

    Reading the sibling ``root`` itself (rather than taking ``${.root}``) lets an unset
    ``root: ???`` give a LabError saying how to set it instead of OmegaConf's MissingMandatoryValue.
    """
    try:
        return len(find_classes(root if root is not None else _configured_root(_parent_)))
    except LabError as err:
        raise _ResolverLabError(str(err)) from None


def _configured_root(parent: Any) -> str:
    # `"root" in parent` is False for `root: ???`, so ask about the missing value first.
    if parent is not None and OmegaConf.is_missing(parent, "root"):
        key = parent._get_full_key("root")
        raise LabError(
            f"{key} is not set; give the folder of {LAYOUT_HINT} on the command line, "
            f"e.g. python train.py data=imagefolder {key}=/path/to/images"
        )
    if parent is None or "root" not in parent:
        raise LabError(
            f"${{{RESOLVER}:}} needs a root key beside it, or a folder: ${{{RESOLVER}:/path}}"
        )
    return str(parent.root)


def register_resolvers() -> None:
    """Register ``lab.count_classes`` once (importing this module does it)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, count_classes)


register_resolvers()


# --- reading the images ------------------------------------------------------------------------


class ImageLoader:
    """Opens an image file as ``mode`` ("L" or "RGB") from any PIL mode; a file PIL cannot read
    becomes a LabError naming it. A class (not a closure) so DataLoader workers can pickle it."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, path: str) -> Image.Image:
        try:
            with Image.open(path) as img:
                return _convert(img, self.mode)
        except _IMAGE_ERRORS as err:
            raise unreadable(path, err) from None


def _convert(img: Image.Image, mode: str) -> Image.Image:
    if img.mode.startswith("I;16"):
        img = img.point(lambda v: v / 256)  # 16-bit grey: scale, as convert() would clip at 255
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # what PIL asks for before dropping a palette's transparency
    return img.convert(mode)


def unreadable(path: str, err: BaseException) -> LabError:
    # PIL's own message for a non-image repeats the path; say what it means instead.
    reason = "not an image PIL recognises" if isinstance(err, UnidentifiedImageError) else err
    return LabError(f"cannot read image {path} ({reason}); replace or delete the file")


def check_headers(samples: Sequence[tuple[str, int]]) -> None:
    """Open every file's header: catches empty files and non-images saved as .jpg up front.

    Only the first bytes are read (about 2 s for CIFAR-10's 60,000 JPEGs on a warm disk, against
    about 6 s to decode them all); a file that is truncated further on is named by the loader.
    """
    for path, _ in samples:
        try:
            with Image.open(path):
                pass
        except _IMAGE_ERRORS as err:
            raise unreadable(path, err) from None


class _ClassFolders(ImageFolder):
    """ImageFolder over the same class folders :func:`class_names` finds (hidden ones skipped)."""

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        classes = class_names(Path(directory))
        return classes, {name: i for i, name in enumerate(classes)}


class _View(Dataset):
    """One ImageFolder's images through one transform: train and eval views share one scan."""

    def __init__(self, folder: ImageFolder, transform: transforms.Compose):
        self.folder = folder
        self.transform = transform

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, target = self.folder[index]
        return self.transform(image), target


# --- holding a folder in memory ----------------------------------------------------------------

# Bump when what a cache file holds, or how its images are made, changes: old files then miss.
CACHE_FORMAT = 1
# Images per chunk a worker decodes and sends back: about this many bytes of pixels, so that
# many chunks keep every worker busy to the end, and few make the per-chunk overhead negligible.
_CHUNK_BYTES = 8 * 2**20


class _Decoder:
    """Files to ``uint8`` ``(n, C, size, size)``: ``loader`` then ``resize``, the PIL path's own
    steps (so the pixels are those its ``ToTensor`` sees). A class so worker processes can
    unpickle it."""

    def __init__(self, loader: ImageLoader, resize: transforms.Resize, channels: int, size: int):
        self.loader = loader
        self.resize = resize
        self.channels = channels
        self.size = size

    def __call__(self, paths: Sequence[str]) -> np.ndarray:
        out = np.empty((len(paths), self.channels, self.size, self.size), dtype=np.uint8)
        for i, path in enumerate(paths):
            pixels = np.asarray(self.resize(self.loader(path)), dtype=np.uint8)
            # (H, W) for L, (H, W, 3) for RGB: channels first, as ToTensor puts them
            out[i] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return out


def decode_files(paths: Sequence[str], decoder: _Decoder, workers: int) -> tuple[torch.Tensor, int]:
    """Every file of ``paths``, in order, as one ``uint8`` tensor, decoded in ``workers`` processes;
    returns it and the number of worker processes that decoded (0: this one).

    The result is allocated once and each chunk copied into place, so memory never holds more than
    the array and the chunks in flight. One worker, or one chunk, is decoded here: a single process
    beside this one would only add its start and the copying back.
    """
    n = len(paths)
    images = np.empty((n, decoder.channels, decoder.size, decoder.size), dtype=np.uint8)
    per_image = max(1, images[:1].nbytes)
    chunk = max(1, min(math.ceil(n / (4 * workers)), _CHUNK_BYTES // per_image))
    starts = range(0, n, chunk)
    if workers <= 1 or len(starts) == 1:
        for start in starts:
            images[start : start + chunk] = decoder(paths[start : start + chunk])
        return torch.from_numpy(images), 0
    pool = ProcessPoolExecutor(workers)
    try:
        parts = pool.map(decoder, [paths[start : start + chunk] for start in starts])
        for start, part in zip(starts, parts, strict=True):
            images[start : start + chunk] = part
    except BrokenProcessPool:
        raise LabError(
            f"a worker process decoding the images ended abruptly (killed, out of memory?); use "
            f"fewer data.num_workers (now {workers}) or data.fast=false"
        ) from None
    finally:
        # On an error (a LabError naming a file the loader cannot read) stop at once: the
        # remaining chunks are not worth decoding.
        pool.shutdown(wait=True, cancel_futures=True)
    return torch.from_numpy(images), workers


def reorder_rows_(images: np.ndarray, order: np.ndarray) -> None:
    """Permute the rows of ``images`` in place so that row ``k`` becomes old row ``order[k]``:
    one row of scratch memory, not a second array (the array may be most of the budget)."""
    placed = np.zeros(len(order), dtype=bool)
    for start in range(len(order)):
        if placed[start]:
            continue
        saved = images[start].copy()
        k = start
        while True:  # follow the cycle through start, filling each row from the next one
            placed[k] = True
            source = int(order[k])
            if source == start:
                images[k] = saved
                break
            images[k] = images[source]
            k = source


def cache_key(root: Path, samples: Sequence[tuple[str, int]], mode: str, size: int) -> str:
    """A hash of what the decoded array depends on: every file's path relative to ``root`` (in
    scan order, i.e. sorted by class folder and name), label, size and modification time, the
    mode, the size and :data:`CACHE_FORMAT`. Any file added, removed, renamed, rewritten or only
    touched gives another key; a folder moved elsewhere keeps its key."""
    digest = hashlib.sha256(f"imagefolder {CACHE_FORMAT} {mode} {size}\n".encode())
    for path, target in samples:
        stat = os.stat(path)
        line = f"{os.path.relpath(path, root)}\0{target}\0{stat.st_size}\0{stat.st_mtime_ns}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


class DecodedCache:
    """Decoded folders saved in ``folder``, one file per :func:`cache_key`.

    A file holds the images, their labels and ``order``, the scan index of each row: a run with
    another split (``split_seed``, ``test_size``) reorders the rows it loads instead of decoding
    again. Files are written to a temporary name and renamed into place, so a parallel job (a
    sweep, DDP processes) reads a whole file or none; a file that cannot be read is decoded again
    and replaced. Nothing is ever deleted: a changed folder leaves its old file behind.
    """

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: str, mode: str, size: int) -> Path:
        return self.folder / f"imagefolder-{mode}{size}-{key[:32]}.pt"

    def load(self, path: Path, key: str, shape: tuple[int, ...]) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            held = torch.load(path, weights_only=True)
            ok = (
                held.get("format") == CACHE_FORMAT
                and held.get("key") == key
                and held["images"].dtype == torch.uint8
                and tuple(held["images"].shape) == shape
                and held["labels"].shape == shape[:1] == held["order"].shape
            )
        except Exception as err:  # noqa: BLE001 - any damage means: decode again
            log.warning("data.cache_dir: cannot read %s (%s); decoding again", path, err)
            return None
        if not ok:
            log.warning(
                "data.cache_dir: %s is not the folder's decoded images; decoding again", path
            )
            return None
        return held

    def save(self, path: Path, held: dict[str, Any]) -> bool:
        """Write ``held`` atomically; a failure (disk full) only costs the next run a decode."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_file(path) as f:
                torch.save(held, f)
        except OSError as err:
            log.warning(
                "data.cache_dir: cannot write %s (%s); the next run decodes again", path, err
            )
            return False
        return True


# --- the datamodule ----------------------------------------------------------------------------


class ImageFolderDataModule(ImageDataModule):
    """A folder of class sub-folders, resized to ``image_size`` x ``image_size``.

    Takes :class:`~datamodules.base.ImageDataModule`'s arguments (``num_workers``, ``split_seed``,
    ``pin_memory``, ``fast``) and:

    Args:
        root: the folder, in either layout of the module docstring.
        val_size: images carved out of the training images for validation; ignored when ``root``
            has a ``val/`` folder, which is then the validation set.
        test_size: for a folder without ``train/``: a count of images (whole number >= 1) or a
            fraction of the folder (0 < x < 1, rounded, at least one image), split off first so
            the test images stay the same whatever ``val_size``. Ignored with ``test/``.
        augment: random shifts by up to ``max_shift`` pixels (default: 1/8 of the size) and
            horizontal flips, training images only.
        check_images: open every file's header in ``setup`` so an unreadable file stops the run
            before training; false leaves it to the loader, which names the file when it meets it.
            In memory every file is decoded in ``setup`` anyway, which names any unreadable one.
        in_channels: 1 converts every image to greyscale, 3 to RGB (palette, RGBA, L included).
        num_classes: must be the number of class folders; None counts them.
        fast: ``auto`` holds the folder in memory when it fits ``max_memory_mb`` (module
            docstring), ``true`` insists (a LabError when it does not fit), ``false`` never does.
        max_memory_mb: the most the decoded images (train, validation and test, ``uint8``) may
            take, in MiB, on the host and again on the training device.
        cache_dir: a folder for the decoded images (:class:`DecodedCache`); None: decode every run.
    """

    # Decoding a folder runs in data.num_workers processes: only pin_memory means nothing there.
    fast_ignores = ("pin_memory",)

    def __init__(
        self,
        root: str,
        batch_size: int = 64,
        val_size: int | float = 0.1,
        test_size: int | float = 0.2,
        augment: bool = False,
        max_shift: int | None = None,
        check_images: bool = True,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        in_channels: int = 3,
        image_size: int = 64,
        num_classes: int | None = None,
        fast: bool | str = "auto",
        max_memory_mb: int = 2048,
        cache_dir: str | None = None,
        **kwargs,
    ):
        folders = split_folders(root)
        classes = find_classes(root)
        if num_classes is not None and num_classes != len(classes):
            raise LabError(
                f"data.num_classes={num_classes} is wrong: {Path(root).expanduser()} has "
                f"{len(classes)} class folders; drop the override, the config counts them"
            )
        _check_test_size(test_size)
        if kwargs.get("split_seed", 0) is None:  # a listing is sorted by class: no order to keep
            raise LabError(
                "data.split_seed=null is for files in an order of their own (CIFAR-10's "
                "batches); an image folder is listed class by class, so give a seed such as 0"
            )
        super().__init__(
            str(root),
            batch_size,
            val_size,
            mean=mean,
            std=std,
            in_channels=in_channels,
            image_size=image_size,
            num_classes=len(classes),
            fast=fast,
            **kwargs,
        )
        self.folders = folders
        self.root = Path(root).expanduser()
        self.classes = classes
        self.test_size = test_size
        shift = max(1, image_size // 8) if max_shift is None else max_shift
        self.augmentation = self.augmentation_from(augment, shift, mirror=True)
        check_bool("data.check_images", check_images)
        self.check_images = check_images
        # use_fast (from the base) only says fast is not false; whether the folder fits is known
        # once setup has listed it, and then auto and true part ways.
        self.fast_option = fast
        check_int("data.max_memory_mb", max_memory_mb, minimum=1)
        self.max_memory_mb = max_memory_mb
        self.cache = None
        if cache_dir is not None:
            if not isinstance(cache_dir, str | os.PathLike) or not str(cache_dir):
                raise LabError(
                    f"data.cache_dir={cache_dir!r} is not allowed; give a folder path, or null "
                    "to decode the images every run"
                )
            cache_folder = Path(cache_dir).expanduser()
            check_writable(cache_folder, f"data.cache_dir={cache_dir}")
            self.cache = DecodedCache(cache_folder)
        self.memory_source: str | None = None  # "decoded" or "cache" once held in memory
        self.mode = "L" if in_channels == 1 else "RGB"
        self.loader = ImageLoader(self.mode)
        self.resize = transforms.Resize((image_size, image_size))
        tensor = [transforms.ToTensor(), self.normalize]
        self.eval_transform = transforms.Compose([self.resize, *tensor])
        # Any size of image comes in: shifted and mirrored once resized.
        moves = self.augmentation.transforms(image_size)
        self.train_transform = transforms.Compose([self.resize, *moves, *tensor])

    def fast_unavailable(self) -> str | None:
        # No option rules memory out (any image_size: decoding resizes); the folder's size
        # decides, in setup (_too_big).
        return None

    @property
    def has_validation(self) -> bool:
        return "val" in self.folders or self.val_size > 0

    def setup(self, stage: str | None = None) -> None:
        if self.data_test is not None:  # train.py sets up early to check the data; do it once
            return
        scans = {name: self._scan(folder) for name, folder in self.folders.items()}
        if self.use_fast:
            too_big = self._too_big(sum(map(len, scans.values())))
            self.use_fast = use_fast_path(self.fast_option, too_big, explain=True)
        if self.check_images and not self.use_fast:  # in memory, decoding reads every file
            for images in scans.values():
                check_headers(images.samples)
        if "all" in self.folders:
            rest, test = self._split_one_folder(scans["all"])
            if self.use_fast:  # rows: the training file (rest, as the split indexes it), then test
                self._hold(scans["all"].samples, rest + test, len(rest))
            return
        train = scans["train"]
        n_train = len(train)
        if "val" in self.folders:
            self.data_train = _View(train, self.train_transform)
            self.data_val = _View(scans["val"], self.eval_transform)
        else:
            self.split(_View(train, self.train_transform), _View(train, self.eval_transform))
        self.data_test = _View(scans["test"], self.eval_transform)
        if self.use_fast:
            samples = [s for images in scans.values() for s in images.samples]  # train, val, test
            n_file = len(samples) - len(scans["test"])
            if "val" in self.folders:
                # The fast path validates on rows of the training file: val/ joins it, after train/.
                self.train_rows = torch.arange(n_train)
                self.val_rows = torch.arange(n_train, n_file)
            self._hold(samples, list(range(len(samples))), n_file)

    def _scan(self, folder: Path) -> ImageFolder:
        """The images of ``folder``, every class folder holding at least one."""
        images = _ClassFolders(
            str(folder), loader=self.loader, is_valid_file=is_image_file, allow_empty=True
        )
        targets = torch.tensor(images.targets, dtype=torch.long)
        counts = torch.bincount(targets, minlength=len(images.classes))
        for name, count in zip(images.classes, counts.tolist(), strict=True):
            if count == 0:
                raise LabError(
                    f"class folder {folder / name} has no images "
                    f"({', '.join(IMG_EXTENSIONS)}); add its images or remove the folder"
                )
        return images

    def _split_one_folder(self, images: ImageFolder) -> tuple[list[int], list[int]]:
        """Seeded test split first, then the base's validation split of the rest; returns the
        (rest, test) indices of the folder."""
        n = len(images)
        n_test = count_of(self.test_size, n)
        if n_test >= n:
            raise LabError(
                f"data.test_size={self.test_size} leaves no training images of the {n} in "
                f"{self.data_dir}; use a fraction such as 0.2 or a count below {n}"
            )
        order = self.seeded_order(n)
        test, rest = order[:n_test].tolist(), order[n_test:].tolist()
        train_view = _View(images, self.train_transform)
        eval_view = _View(images, self.eval_transform)
        self.data_test = Subset(eval_view, test)
        self.split(Subset(train_view, rest), Subset(eval_view, rest))
        return rest, test

    # --- in memory ---------------------------------------------------------------------------

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def _too_big(self, n: int) -> str | None:
        """Why ``n`` decoded images cannot be held in memory (over ``max_memory_mb``), or None."""
        needed = n * self.channels * self.image_size**2
        if needed <= self.max_memory_mb * 2**20:
            return None
        return (
            f"the {n} images of {self.root} at {self.image_size}x{self.image_size}x{self.channels} "
            f"need {needed / 2**20:,.1f} MB, more than data.max_memory_mb={self.max_memory_mb} "
            "(raise it if the host and training device have the memory)"
        )

    def _hold(self, samples: Sequence[tuple[str, int]], order: list[int], n_file: int) -> None:
        """Decode (or load) the images of ``samples`` as rows ``order`` of one array, and hold
        its first ``n_file`` rows as the training file and the rest as the test set."""
        images, labels = self._decoded(samples, np.asarray(order, dtype=np.int64))
        # Two views of one array: no copy on the host; each goes to the device once, as its own.
        self.hold_in_memory(
            InMemoryImages(images[:n_file], labels[:n_file]),
            InMemoryImages(images[n_file:], labels[n_file:]),
        )

    def _decoded(
        self, samples: Sequence[tuple[str, int]], order: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of ``samples[order]``, from the cache or decoded (and cached)."""
        shape = (len(order), self.channels, self.image_size, self.image_size)
        path = key = None
        if self.cache is not None:
            started = time.perf_counter()
            key = cache_key(self.root, samples, self.mode, self.image_size)
            path = self.cache.path(key, self.mode, self.image_size)
            held = self.cache.load(path, key, shape)
            if held is not None:
                images, labels = held["images"], held["labels"]
                stored = held["order"].numpy()
                if not np.array_equal(stored, order):  # another split of the same files
                    row_of = np.empty_like(stored)
                    row_of[stored] = np.arange(len(stored))
                    reorder_rows_(images.numpy(), row_of[order])
                    labels = labels[torch.from_numpy(row_of[order])]
                self.memory_source = "cache"
                log.info(
                    "data.fast: loaded the decoded images of %s from %s in %.1f s",
                    self.root,
                    path,
                    time.perf_counter() - started,
                )
                return images, labels
        started = time.perf_counter()
        paths = [samples[i][0] for i in order]
        decoder = _Decoder(self.loader, self.resize, self.channels, self.image_size)
        images, processes = decode_files(paths, decoder, max(1, self.num_workers))
        labels = torch.tensor([samples[i][1] for i in order], dtype=torch.int64)
        self.memory_source = "decoded"
        log.info(
            "data.fast: decoded %d images of %s at %dx%d in %.1f s (%s)",
            len(paths),
            self.root,
            self.image_size,
            self.image_size,
            time.perf_counter() - started,
            f"{processes} worker processes" if processes else "in this process",
        )
        if path is not None:
            held = {
                "format": CACHE_FORMAT,
                "key": key,
                "images": images,
                "labels": labels,
                "order": torch.from_numpy(order),
            }
            if self.cache.save(path, held):
                log.info("data.fast: saved the decoded images to %s for the next run", path)
        return images, labels


def _check_test_size(value: Any) -> None:
    if not (is_fraction(value) or (is_whole(value) and value >= 1)):
        raise LabError(
            f"data.test_size={value!r} is not allowed; use a count of images (a whole number of "
            "at least 1) or a fraction between 0 and 1 such as 0.2"
        )
