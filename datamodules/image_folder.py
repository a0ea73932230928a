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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision import transforms
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from datamodules.base import Augmentation, ImageDataModule, count_of
from lightning_models.checks import LabError, check_bool, is_fraction, is_whole

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


# --- the datamodule ----------------------------------------------------------------------------


class ImageFolderDataModule(ImageDataModule):
    """A folder of class sub-folders, resized to ``image_size`` x ``image_size``.

    Takes :class:`~datamodules.base.ImageDataModule`'s arguments (``num_workers``, ``split_seed``,
    ``pin_memory``) and:

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
        in_channels: 1 converts every image to greyscale, 3 to RGB (palette, RGBA, L included).
        num_classes: must be the number of class folders; None counts them.
    """

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
        super().__init__(
            str(root),
            batch_size,
            val_size,
            mean=mean,
            std=std,
            in_channels=in_channels,
            image_size=image_size,
            num_classes=len(classes),
            **kwargs,
        )
        self.folders = folders
        self.classes = classes
        self.test_size = test_size
        shift = max(1, image_size // 8) if max_shift is None else max_shift
        self.augmentation = Augmentation.from_options(augment, shift, mirror=True)
        check_bool("data.check_images", check_images)
        self.check_images = check_images
        self.loader = ImageLoader("L" if in_channels == 1 else "RGB")
        resize = transforms.Resize((image_size, image_size))
        tensor = [transforms.ToTensor(), self.normalize]
        self.eval_transform = transforms.Compose([resize, *tensor])
        # Any size of image comes in: shifted and mirrored once resized.
        moves = self.augmentation.transforms(image_size)
        self.train_transform = transforms.Compose([resize, *moves, *tensor])

    @property
    def has_validation(self) -> bool:
        return "val" in self.folders or self.val_size > 0

    def setup(self, stage: str | None = None) -> None:
        if self.data_test is not None:  # train.py sets up early to check the data; do it once
            return
        if "all" in self.folders:
            self._split_one_folder(self._scan(self.folders["all"]))
            return
        train = self._scan(self.folders["train"])
        if "val" in self.folders:
            self.data_train = _View(train, self.train_transform)
            self.data_val = _View(self._scan(self.folders["val"]), self.eval_transform)
        else:
            self.split(_View(train, self.train_transform), _View(train, self.eval_transform))
        self.data_test = _View(self._scan(self.folders["test"]), self.eval_transform)

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
        if self.check_images:
            check_headers(images.samples)
        return images

    def _split_one_folder(self, images: ImageFolder) -> None:
        """Seeded test split first, then the base's validation split of the rest."""
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


def _check_test_size(value: Any) -> None:
    if not (is_fraction(value) or (is_whole(value) and value >= 1)):
        raise LabError(
            f"data.test_size={value!r} is not allowed; use a count of images (a whole number of "
            "at least 1) or a fraction between 0 and 1 such as 0.2"
        )
