"""What every ``data=`` choice shares: argument checks, the augmentation, the seeded validation
split, the loaders.

Subclasses find their files (``prepare_data``), declare their training-time :class:`Augmentation`
once from their options, and build the full training and test datasets (``setup``); the split and
the loaders are made here once for all of them.

Two kinds of loaders: torchvision's ``DataLoader`` over the datasets (any dataset, any transform),
and, for datasets held in memory (MNIST, FashionMNIST, CIFAR-10 at their own image size; image
folders decoded once when they fit ``data.max_memory_mb``), the fast path of
:mod:`datamodules.in_memory` (``data.fast``): the images as one ``uint8`` tensor on the training
device, batched, normalised and augmented there, with the same split, values and augmentation
semantics. ``data.fast=auto`` (the default) takes it where it applies, ``true`` insists (a
LabError says why it cannot), ``false`` keeps torchvision's loaders. On the fast path
``pin_memory`` is ignored (there is no host-to-device copy per batch), and so is ``num_workers``
except where the files are decoded once in that many workers (image folders), and
``data_train``/``data_val``/``data_test`` are still torchvision's datasets (for inspection,
predictions and figures); only the loaders differ. Everything the fast path keeps (the
tensors, their copy on the device, the train loader's place for checkpoints) is one
:class:`~datamodules.in_memory.FastLoaders`, the datamodule's ``fast`` once it is set up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms
from torchvision.transforms import v2

from datamodules.in_memory import (
    BatchMaker,
    FastLoaders,
    InMemoryImages,
    OrderedBatches,
    ShuffledBatches,
    each_image,
    use_fast_path,
)
from lightning_models.checks import LabError, check_bool, check_int, is_finite_number, is_fraction

log = logging.getLogger(__name__)

# data.policy: torchvision's augmentation policies, each drawing its ops anew for every image.
POLICIES: dict[str, Callable[[], v2.Transform]] = {
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
    "autoaugment": partial(v2.AutoAugment, v2.AutoAugmentPolicy.IMAGENET),
    "autoaugment_cifar10": partial(v2.AutoAugment, v2.AutoAugmentPolicy.CIFAR10),
    "autoaugment_svhn": partial(v2.AutoAugment, v2.AutoAugmentPolicy.SVHN),
}
# data.mix: torchvision's batch mixers (each pairs an image with the next one of the shuffled
# batch), as functions of the Beta distribution's alpha and the number of classes.
MIXES: dict[str, Callable[[float, int], v2.Transform]] = {
    "mixup": lambda alpha, n: v2.MixUp(alpha=alpha, num_classes=n),
    "cutmix": lambda alpha, n: v2.CutMix(alpha=alpha, num_classes=n),
    "mixup_cutmix": lambda alpha, n: v2.RandomChoice(
        [v2.MixUp(alpha=alpha, num_classes=n), v2.CutMix(alpha=alpha, num_classes=n)]
    ),
}


@dataclass(frozen=True)
class Augmentation:
    """A datamodule's training-time augmentation, declared once and read by both paths; the
    default is none, and validation and test images are never augmented.

    Per image, in this order: random shifts by up to ``max_shift`` pixels (a crop of the
    zero-padded image, as ``RandomCrop(size, padding=max_shift)``), horizontal flips when
    ``mirror``, then torchvision's ``policy`` (:data:`POLICIES`) on the ``uint8`` image. Per
    batch, once normalised: random erasing of each image with probability ``erase`` (to 0, the
    data's mean), then ``mix`` (:data:`MIXES`), which makes the labels class probabilities.

    The fast path (:meth:`batch_maker`) does all of it on the training device, the policy and the
    erasing one image at a time (torchvision's transforms given a batch draw one op or one
    rectangle for all of its images). torchvision's path runs the shifts, flips and policy in the
    dataset's transform (on PIL images) and the erasing and mixing on each batch on the training
    device (:meth:`ImageDataModule.on_after_batch_transfer`). The same draws per image, not the
    same pixels: torchvision's PIL and tensor kernels of a policy's ops differ slightly.
    """

    max_shift: int = 0
    mirror: bool = False
    policy: str | None = None
    erase: float = 0.0
    mix: str | None = None
    mix_alpha: float = 1.0

    def __post_init__(self) -> None:
        check_int("data.max_shift", self.max_shift, minimum=0)
        for key, value, names in (("policy", self.policy, POLICIES), ("mix", self.mix, MIXES)):
            if value is not None and value not in names:
                raise LabError(
                    f"data.{key}={value!r} is not allowed; use null or one of {', '.join(names)}"
                )
        if not (is_finite_number(self.erase) and 0 <= self.erase <= 1):
            raise LabError(
                f"data.erase={self.erase!r} is not allowed; use a probability from 0 (no erasing) "
                "to 1"
            )
        if not (is_finite_number(self.mix_alpha) and self.mix_alpha > 0):
            raise LabError(
                f"data.mix_alpha={self.mix_alpha!r} is not allowed; use a positive number such "
                "as 1.0"
            )

    @classmethod
    def from_options(
        cls, augment: Any, max_shift: Any, mirror: bool, **per_batch_and_policy: Any
    ) -> Augmentation:
        """What ``data.augment`` (true or false) and ``data.max_shift`` ask for; ``mirror`` is the
        dataset's to say (a mirrored coat is a coat, a mirrored 7 is no digit). The policy,
        erasing and mixing (``data.policy``, ``erase``, ``mix``, ``mix_alpha``) do not depend on
        ``data.augment``, the switch of the shifts and mirrors."""
        check_bool("data.augment", augment)
        moves = {"max_shift": max_shift, "mirror": mirror} if augment else {}
        return cls(**moves, **per_batch_and_policy)

    @property
    def mixes(self) -> bool:
        """Whether training labels are class probabilities (mixup, cutmix), not class indices."""
        return self.mix is not None

    def transforms(self, size: int) -> list:
        """torchvision's per-image steps for ``size`` x ``size`` PIL images (none without
        augmentation); the per-batch ones are :meth:`per_batch`'s."""
        steps: list = []
        if self.max_shift:
            steps.append(transforms.RandomCrop(size, padding=self.max_shift))
        if self.mirror:
            steps.append(transforms.RandomHorizontalFlip())
        if self.policy is not None:
            steps.append(POLICIES[self.policy]())
        return steps

    def per_batch(self, num_classes: int) -> BatchAugment | None:
        """The erasing and mixing of normalised training batches, None without either."""
        if not (self.erase or self.mixes):
            return None
        mix = MIXES[self.mix](float(self.mix_alpha), num_classes) if self.mixes else None
        return BatchAugment(v2.RandomErasing(p=self.erase, value=0) if self.erase else None, mix)

    def batch_maker(
        self, mean: Sequence[float], std: Sequence[float], channels: int, num_classes: int
    ) -> BatchMaker:
        """The fast path's maker of training batches: the same shifts and flips, drawn per image,
        computed for the whole batch at once on its device; the policy, erasing and mixing on
        that device too, drawn from a generator seeded per batch."""
        return BatchMaker(
            mean,
            std,
            channels,
            max_shift=self.max_shift,
            mirror=self.mirror,
            per_image=POLICIES[self.policy]() if self.policy is not None else None,
            per_batch=self.per_batch(num_classes),
        )

    def where(self, fast: bool, device: Any) -> str | None:
        """The log line saying which augmentation runs where (None without any)."""
        per_image = [
            step
            for step, on in (
                (f"shifts by up to {self.max_shift} px", self.max_shift),
                ("mirrors", self.mirror),
                (f"{self.policy} (one image at a time)" if fast else self.policy, self.policy),
            )
            if on
        ]
        per_batch = [
            step
            for step, on in (
                (f"random erasing p={self.erase} (one image at a time)", self.erase),
                (f"{self.mix} alpha={self.mix_alpha}", self.mixes),
            )
            if on
        ]
        parts = []
        if per_image:
            place = f"on {device}" if fast else "in the DataLoader, on PIL images"
            parts.append(f"{', '.join(per_image)} per image {place}")
        if per_batch:
            parts.append(f"{', then '.join(per_batch)} on each normalised batch on {device}")
        if not parts:
            return None
        path = "the fast path (data.fast)" if fast else "torchvision's DataLoader path"
        return f"augment: training images, {path}: {'; '.join(parts)}"


class BatchAugment:
    """Erases one random rectangle of each image with the erasing's probability (one image at a
    time: given a batch, torchvision's RandomErasing erases the same rectangle of every image),
    then mixes the batch; ``(x, y)`` in, ``(x, y)`` out, ``y`` then ``(B, classes)`` float
    probabilities. Draws from torch's CPU generator, as torchvision's transforms do."""

    def __init__(self, erase: v2.Transform | None, mix: v2.Transform | None):
        self.erase = erase
        self.mix = mix

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.erase is not None:
            x = each_image(self.erase, x)
        if self.mix is not None:
            x, y = self.mix(x, y)
        return x, y


class ImageDataModule(L.LightningDataModule):
    """Base of the lab's datamodules.

    Args:
        data_dir: folder the dataset lives in.
        batch_size: images per batch, for every stage.
        val_size: images carved out of the training set for validation (a count, or a fraction
            between 0 and 1 of it), by a split seeded with ``split_seed`` (fixed across training
            seeds, so all runs validate on the same images); ``split_seed=None`` keeps the files'
            own order instead: the last ``val_size`` images validate (CS231n's 49k / 1k split of
            CIFAR-10, report 003). 0 means no validation loop, as in the reports.
        num_workers: DataLoader worker processes.
        mean, std: per-channel normalisation after ``ToTensor`` (mean 0, std 1 leaves it as is).
        in_channels, image_size, num_classes: the shape the models are built for.
        pin_memory: pin host memory for faster copies to a GPU.
        fast: ``auto``, ``true`` or ``false``: the in-memory fast path (module docstring) where
            it applies, always (else a LabError saying why not), or never.
        shuffle: a new order of the training images every epoch (seeded by the run's seed);
            false keeps the training set's own order every epoch, as report 004's loader did.
        policy, erase, mix, mix_alpha: the training augmentation beside the shifts and mirrors
            (:class:`Augmentation`); subclasses declare the whole of it with
            :meth:`augmentation_from`.
    """

    dataset_classes: int | None = None  # fixed by the dataset (10 for MNIST), else None
    in_memory_dataset = False  # torchvision holds every image in memory: the fast path applies
    mirror_keeps_label = True  # a mirrored image shows the same class (not so for digits)
    native_size: int | None = None  # the dataset's own image size, when it has one
    # Options the fast path has no use for (no worker, no host-to-device copy per batch), named
    # in its log line when set; a datamodule that decodes its files in workers keeps num_workers.
    fast_ignores: tuple[str, ...] = ("num_workers", "pin_memory")

    def __init__(
        self,
        data_dir: str,
        batch_size: int,
        val_size: int | float,
        num_workers: int = 0,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        split_seed: int | None = 0,
        in_channels: int = 1,
        image_size: int = 28,
        num_classes: int = 10,
        pin_memory: bool = False,
        fast: bool | str = "auto",
        shuffle: bool = True,
        policy: str | None = None,
        erase: float = 0.0,
        mix: str | None = None,
        mix_alpha: float = 1.0,
    ):
        super().__init__()
        check_bool("data.shuffle", shuffle)
        check_int("data.batch_size", batch_size, minimum=1)
        check_int("data.image_size", image_size, minimum=1)
        check_int("data.num_classes", num_classes, minimum=2)
        if not is_fraction(val_size):
            check_int("data.val_size", val_size, minimum=0, or_fraction=True)
        check_int("data.num_workers", num_workers, minimum=0)
        if split_seed is not None:
            check_int("data.split_seed", split_seed, minimum=0)
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
        self.shuffle = shuffle
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.normalize = transforms.Normalize(self.mean, self.std)
        self.augmentation = Augmentation()  # subclasses declare theirs (augmentation_from)
        self._policy_and_per_batch = {
            "policy": policy, "erase": erase, "mix": mix, "mix_alpha": mix_alpha
        }  # fmt: skip
        self.data_train: Dataset | None = None
        self.data_val: Dataset | None = None
        self.data_test: Dataset | None = None
        self.classes: list[str] = []
        self.train_rows: torch.Tensor | None = None  # the split as rows of the training file
        self.val_rows: torch.Tensor | None = None
        self.use_fast = use_fast_path(fast, self.fast_unavailable(), self.in_memory_dataset)
        self.fast: FastLoaders | None = None  # the fast path, once set up (hold_in_memory)

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("DataModule")

    @property
    def has_validation(self) -> bool:
        return self.val_size > 0

    def augmentation_from(self, augment: Any, max_shift: Any, mirror: bool) -> Augmentation:
        """The training augmentation: shifts and mirrors as :meth:`Augmentation.from_options`
        says, with this datamodule's policy, erasing and mixing."""
        return Augmentation.from_options(augment, max_shift, mirror, **self._policy_and_per_batch)

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

    def hold_in_memory(self, train: InMemoryImages, test: InMemoryImages) -> None:
        """Take the fast path with the whole training file and the test set as tensors.
        Subclasses call it in setup, after the split, when ``use_fast``."""
        self.fast = FastLoaders(
            self.name,
            train,
            test,
            self.batch_size,
            train_batches=self.augmentation.batch_maker(
                self.mean, self.std, self.in_channels, self.num_classes
            ),
            eval_batches=BatchMaker(self.mean, self.std, self.in_channels),
            train_rows=self.train_rows,
            val_rows=self.val_rows,
            shuffle=self.shuffle,
            ignored=[f"data.{k}" for k in self.fast_ignores if getattr(self, k)],
        )

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
        return self.fast.state_dict() if self.fast is not None else {}

    def load_state_dict(self, state_dict: dict[str, dict[str, int]]) -> None:
        # Lightning restores the datamodule after its setup, so the fast path is there by now.
        if self.fast is not None:
            self.fast.load_state_dict(state_dict)

    # --- split and loaders -------------------------------------------------------------------

    def split(self, train_view: Dataset, eval_view: Dataset | None = None) -> None:
        """Carve ``val_size`` images out of the training set, the same ones for every seed.

        ``eval_view`` is the same images with evaluation transforms (no augmentation); the
        validation subset is taken from it.
        """
        n = len(train_view)
        n_val = count_of(self.val_size, n)
        if n_val >= n:
            raise LabError(
                f"data.val_size={self.val_size} is not smaller than the {self.name} training set "
                f"({n} images); use a value from 0 to {n - 1}"
            )
        if not n_val:
            self.data_train = train_view
            self.train_rows = self.val_rows = None
            return
        order = self.seeded_order(n)
        self.train_rows, self.val_rows = order[: n - n_val], order[n - n_val :]
        self.data_train = Subset(train_view, self.train_rows.tolist())
        self.data_val = Subset(
            eval_view if eval_view is not None else train_view, self.val_rows.tolist()
        )

    def seeded_order(self, n: int) -> torch.Tensor:
        """A permutation of ``n`` images that only ``split_seed`` changes (not the run's seed):
        every split is cut from it. ``split_seed=None``: the files' own order."""
        if self.split_seed is None:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))

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
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        where = self.augmentation.where(self.fast is not None, device)
        if where is not None:
            log.info("%s", where)
        if self.fast is not None:
            return self.fast.train_loader(self.trainer)
        return self._loader(self.data_train, shuffle=self.shuffle)

    @cached_property
    def _per_batch(self) -> BatchAugment | None:
        # First read by the first training batch, once the path is known.
        return None if self.fast is not None else self.augmentation.per_batch(self.num_classes)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """torchvision's path: erase and mix training batches on the training device, from
        torch's global RNG (seeded by the run's seed, saved in checkpoints), as its loader's
        shifts, flips and policy draw. The fast path's batches come augmented; validation and
        test batches never are."""
        if self._per_batch is None or self.trainer is None or not self.trainer.training:
            return batch
        return self._per_batch(*batch)

    def val_dataloader(self) -> DataLoader | OrderedBatches | list:
        # No loader means no validation loop (Lightning skips it), also under fast_dev_run.
        if not self.has_validation:
            return []
        if self.fast is not None:
            return self.fast.val_loader(self.trainer)
        return self._loader(self.data_val, shuffle=False)

    def test_dataloader(self) -> DataLoader | OrderedBatches:
        if self.fast is not None:
            return self.fast.test_loader(self.trainer)
        return self._loader(self.data_test, shuffle=False)


def count_of(size: int | float, n: int) -> int:
    """How many of ``n`` images ``size`` asks for: a count as it is, a fraction of ``n`` rounded
    (at least one image)."""
    return max(1, round(size * n)) if is_fraction(size) else int(size)


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
