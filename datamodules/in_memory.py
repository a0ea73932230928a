"""The fast data path (``data.fast``): datasets that fit in memory, batched on the training device.

torchvision's MNIST, FashionMNIST and CIFAR-10 datasets already hold every image in memory, yet
through a ``DataLoader`` each image becomes a PIL image and a tensor again, one at a time, every
epoch: on a 2-core machine that halves the speed at which LeNet-5 trains. Here the images are
decoded once into a ``uint8`` tensor ``(N, C, H, W)`` and ``int64`` labels, kept on the training
device (``trainer.strategy.root_device``; the CPU without a trainer), and every batch is made there
from a slice of an index tensor, with no PIL, no worker process and no host synchronisation::

    x = images[rows]                              # uint8, gathered on the device
    x = shift_and_flip(x, ...)                    # training only, when augmenting
    x = torch.stack([policy(i) for i in x])       # training only, with data.policy
    x = (x.float() / 255 - mean) / std            # what ToTensor + Normalize compute
    x, y = per_batch(x, y)                        # training only: data.erase, data.mix

Where nothing augments a batch (evaluation, training with ``data.augment=false``), the
normalisation is done once for the whole set instead (up to ``PRENORMALISE_MAX_BYTES`` of float32
per set, shared by the stages that use it; a validation split of fewer than half the rows of its
file only uses a copy that training made) and each batch is gathered from that: the same values.

The results are those of the torchvision path, bit for bit on the CPU: the same split (the
datamodule's seeded split indices), the same ``ToTensor`` + ``Normalize`` arithmetic, grey images
replicated to 3 channels as ``Grayscale(3)`` does, RGB made grey with PIL's own integer formula.
Augmentation has ``RandomCrop(size, padding=max_shift)`` (zero padding) and
``RandomHorizontalFlip`` semantics, drawn per image but computed for the whole batch at once;
torchvision's policies and random erasing run one image at a time (given a batch they would draw
one op, or one rectangle, for all of its images), its mixers on the batch, all on the device, from
torch's CPU generator seeded for each batch from the epoch's plan.
Resizing is not done here: a datamodule asked for another ``image_size`` uses the torchvision path.

A datamodule keeps everything of its fast path in one :class:`FastLoaders` (the tensors, their copy
on the training device, the loaders of each stage, the train loader's place for checkpoints),
made in its ``setup`` when :func:`use_fast_path` says ``data.fast`` takes it.

Sampling (:class:`ShuffledBatches`) is reproducible and resumable. Epoch ``e`` is a permutation
(plus the augmentation draws of its images) from a generator seeded with ``(seed, e)`` on the CPU,
so it depends neither on the device nor on how many batches were drawn before; ``seed`` is
``torch.initial_seed()`` when the loader is made, i.e. the run's ``seed`` after
``seed_everything(seed)``, read without drawing from the global RNG, so the model's initial weights
are those of the torchvision path. The epoch comes from the trainer (``trainer.current_epoch``,
read when the epoch's first batch is made), else from :meth:`ShuffledBatches.set_epoch` or the
count of finished passes. ``state_dict()`` holds the epoch, the batches of it consumed by training
steps, and the seed; Lightning saves it in every checkpoint (``FitLoop.on_save_checkpoint`` asks
every train loader with ``state_dict``/``load_state_dict``) and restores it before a resumed fit
creates its iterator, which then continues with the very next batch of the same permutation.
Lightning 2.6 fetches a batch ahead only from loaders without a length (``_PrefetchDataFetcher``),
so batches made = batches consumed here; the position is still capped by the trainer's count of
batches taken (``batch_progress.current.ready``), so a batch fetched ahead is never counted.

Under DDP (``trainer=ddp``, ``ddp_cpu``) each process gets its share (:func:`process_share`): in
training, process ``r`` of ``W`` takes every ``W``-th row of the epoch's permutation starting at
``r`` (``DistributedSampler``'s interleaving, the same permutation on every process), after
dropping the last ``N mod W`` rows so that the shares are disjoint and every process runs the same
number of batches (a process with one batch more would wait for the others' gradients forever).
Global batch ``k`` (batch ``k`` of every process, ``W x batch_size`` images) is then exactly batch
``k`` of a single process with ``W x batch_size``: the same images per optimizer step.
Validation and test rows are interleaved the same way, none dropped (no gradients to wait for);
torchmetrics adds the processes' counts up, so their metrics cover every image once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from lightning_models.checks import LabError, is_whole

log = logging.getLogger(__name__)

# --- holding a dataset ----------------------------------------------------------------------


@dataclass
class InMemoryImages:
    """Images as ``uint8`` ``(N, C, H, W)`` and labels as ``int64`` ``(N,)``, on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            shape = tuple(self.images.shape)
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("one label per image is needed")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def nbytes(self) -> int:
        return self.images.nbytes + self.labels.nbytes

    def to(self, device: torch.device | str) -> InMemoryImages:
        return InMemoryImages(self.images.to(device), self.labels.to(device))


def from_mnist(dataset: Any) -> InMemoryImages:
    """torchvision's MNIST/FashionMNIST: ``.data`` uint8 N x 28 x 28, ``.targets`` int64 (a view,
    no copy, on the CPU)."""
    images = torch.as_tensor(dataset.data)
    return InMemoryImages(images.unsqueeze(1), torch.as_tensor(dataset.targets, dtype=torch.int64))


def from_cifar(dataset: Any, grey: bool = False) -> InMemoryImages:
    """torchvision's CIFAR10: ``.data`` numpy uint8 N x 32 x 32 x 3, ``.targets`` a list.

    ``grey`` converts the images to one channel as PIL's ``convert("L")`` does.
    """
    images = torch.from_numpy(np.ascontiguousarray(dataset.data)).permute(0, 3, 1, 2).contiguous()
    if grey:
        images = rgb_to_grey(images)
    return InMemoryImages(images, torch.as_tensor(dataset.targets, dtype=torch.int64))


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` RGB ``(N, 3, H, W)`` to ``(N, 1, H, W)`` by PIL's integer ITU-R 601-2 luma
    (``L = R*299/1000 + G*587/1000 + B*114/1000``, rounded as PIL rounds it)."""
    rgb = images.to(torch.int32)
    grey = rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000
    return (grey >> 16).to(torch.uint8).unsqueeze(1)


# --- making a batch ---------------------------------------------------------------------------

# Normalising a batch of 100 FashionMNIST images costs about 48 us on a CPU core (4 passes over
# it: float, /255, -mean, /std), 5% of a training step of the lab's path once the net is taken
# away, and is the same every epoch; a whole set normalised once takes 4 bytes a pixel instead
# of 1 (FashionMNIST 188 MB, CIFAR-10 614 MB). Larger sets normalise each batch.
PRENORMALISE_MAX_BYTES = 1 << 30
# uint8 images -> {(mean, std): the same images normalised}; kept while the images are (keyed by
# identity: a tensor's == compares its values).
_NORMALISED: WeakIdKeyDictionary = WeakIdKeyDictionary()


class BatchMaker:
    """Turns rows of an :class:`InMemoryImages` into a model batch, on the images' device.

    Args:
        mean, std: ``Normalize``'s per-channel values (1 value, or one per output channel).
        out_channels: 3 replicates grey images to 3 channels (``Grayscale(3)``).
        max_shift: augmentation: random shifts by up to this many pixels (0: none).
        mirror: augmentation: random horizontal flips.
        per_image: augmentation: a transform of one ``uint8`` image ``(C, H, W)`` (torchvision's
            policies), applied to each image after the shifts and flips.
        per_batch: augmentation: ``(x, y) -> (x, y)`` on the normalised batch (random erasing,
            mixing; ``y`` may come back as class probabilities).
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        out_channels: int,
        max_shift: int = 0,
        mirror: bool = False,
        per_image: Callable[[torch.Tensor], torch.Tensor] | None = None,
        per_batch: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
        | None = None,
    ):
        self.mean_values = tuple(float(m) for m in mean)
        self.std_values = tuple(float(s) for s in std)
        self.out_channels = out_channels
        self.max_shift = max_shift
        self.mirror = mirror
        self.per_image = per_image
        self.per_batch = per_batch
        self._constants: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def augments(self) -> bool:
        return self.max_shift > 0 or self.mirror or self.draws_per_batch

    @property
    def draws_per_batch(self) -> bool:
        """Whether a batch needs a seed of its own (``__call__``'s ``seed``): torchvision's
        transforms draw from torch's CPU generator when they run."""
        return self.per_image is not None or self.per_batch is not None

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            # float32, as Normalize makes them from the same Python floats
            mean = torch.tensor(self.mean_values, dtype=torch.float32, device=device)
            std = torch.tensor(self.std_values, dtype=torch.float32, device=device)
            self._constants[device] = (mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1))
        return self._constants[device]

    def __call__(
        self,
        data: InMemoryImages,
        rows: torch.Tensor,
        shifts: torch.Tensor | None = None,
        flips: torch.Tensor | None = None,
        seed: int | None = None,
        normalise_set: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` for ``rows`` (int64, on the data's device); ``shifts`` (``(B, 2)``: crop
        top and left in ``0..2*max_shift``) and ``flips`` (``(B,)`` bool) augment; ``seed``
        seeds torch's CPU generator for ``per_image`` and ``per_batch`` (and it is put back as
        it was after), so that the batch depends on it alone; None draws from it as it is.
        Unaugmented rows come from the set normalised once, made here unless ``normalise_set``
        is False (then only a copy another loader made is used)."""
        y = data.labels.index_select(0, rows)
        if shifts is None and flips is None and not self.draws_per_batch:
            whole = self._normalised_set(data.images, make=normalise_set)
            if whole is not None:
                return self._as_out_channels(whole.index_select(0, rows)), y
        x = data.images.index_select(0, rows)
        if shifts is not None or flips is not None:
            x = shift_and_flip(x, self.max_shift, shifts, flips)
        if not self.draws_per_batch:
            return self._normalized(x), y
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                # the CPU generator only: torch.manual_seed would reseed the GPUs' too (dropout)
                torch.default_generator.manual_seed(seed)
            if self.per_image is not None:
                x = each_image(self.per_image, x)
            x = self._normalized(x)
            if self.per_batch is not None:
                x, y = self.per_batch(x, y)
        return x, y

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        """``uint8`` images as the model takes them: channels replicated, ToTensor, Normalize."""
        if x.shape[1] != self.out_channels:
            x = x.expand(-1, self.out_channels, -1, -1)
        return self._to_tensor_and_normalize(x)

    def _to_tensor_and_normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self._mean_std(x.device)
        return x.to(torch.float32).div_(255).sub_(mean).div_(std)

    def _as_out_channels(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.out_channels:
            return x
        return x.expand(-1, self.out_channels, -1, -1).contiguous()

    def _normalised_set(self, images: torch.Tensor, make: bool = True) -> torch.Tensor | None:
        """All of ``images`` normalised (their own channels), made once and shared by every
        BatchMaker with the same mean and std; None for a set above PRENORMALISE_MAX_BYTES, or
        not made yet when ``make`` is False."""
        # one value broadcasts over any channels; one per channel needs the source's channels
        # (grey images replicated to 3 before a per-channel Normalize normalise each batch)
        if len(self.mean_values) not in (1, images.shape[1]):
            return None
        if images.numel() * 4 > PRENORMALISE_MAX_BYTES:
            return None
        key = (self.mean_values, self.std_values)
        made = _NORMALISED.get(images, {})
        if key not in made:
            if not make:
                return None
            _NORMALISED[images] = made
            made[key] = self._to_tensor_and_normalize(images)
            log.info(
                "data.fast: %d images normalised once for every unaugmented batch (%.1f MB)",
                len(images),
                made[key].nbytes / 2**20,
            )
        return made[key]


def each_image(transform: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``transform`` applied to each image of the batch ``x`` on its own (torchvision's random
    transforms draw once per call), stacked again.

    On the CPU on one thread: ops on one small image gain nothing from more, and where the cores
    are busy, waking the other threads for every op costs far more than the op (measured on 2
    shared cores: RandAugment on 64 CIFAR-10 images 28 ms on one thread, 500 ms on two).
    """
    if x.device.type != "cpu":
        return torch.stack([transform(image) for image in x])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.stack([transform(image) for image in x])
    finally:
        torch.set_num_threads(threads)


def shift_and_flip(
    x: torch.Tensor,
    max_shift: int,
    shifts: torch.Tensor | None,
    flips: torch.Tensor | None,
) -> torch.Tensor:
    """A batch ``(B, C, H, W)`` as ``RandomCrop((H, W), padding=max_shift)`` (zero fill), then
    ``RandomHorizontalFlip``, would leave it for the given draws, computed on its device.

    ``shifts[b] = (top, left)`` is the crop's corner in the padded image (``0..2*max_shift``,
    ``max_shift`` = no shift); ``flips[b]`` mirrors image ``b``. Two gathers (rows, then
    columns), about 0.25 ms for 100 MNIST images on one CPU core.
    """
    b, c, h, w = x.shape
    device = x.device
    left: torch.Tensor | int = 0
    if shifts is not None and max_shift > 0:
        x = F.pad(x, (max_shift, max_shift, max_shift, max_shift))
        top, left = shifts[:, 0:1], shifts[:, 1:2]
        rows = top + torch.arange(h, device=device)  # (B, H): rows of the padded images
        x = torch.gather(x, 2, rows.view(b, 1, h, 1).expand(b, c, h, x.shape[3]))
    elif flips is None:
        return x
    cols = torch.arange(w, device=device).expand(b, w)
    if flips is not None:
        cols = torch.where(flips[:, None], (w - 1) - cols, cols)
    cols = cols + left  # (B, W): columns of the padded images
    return torch.gather(x, 3, cols.view(b, 1, 1, w).expand(b, c, h, w))


# --- the loaders ------------------------------------------------------------------------------


class _Batches:
    """What both loaders hold: the data, the batch size, the batch maker, this process's share."""

    def __init__(
        self,
        data: InMemoryImages,
        batch_size: int,
        make: BatchMaker,
        rank: int,
        world_size: int,
        shuffle: bool,
    ):
        if not (is_whole(world_size) and world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(f"rank {rank} of {world_size} processes is not a process of the run")
        self.data = data
        self.batch_size = batch_size
        self.make = make
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle


class OrderedBatches(_Batches):
    """Validation and test batches: ``rows`` of the data (all when None) in order, no
    augmentation, the last batch possibly smaller (as ``DataLoader(shuffle=False)``); under DDP
    process ``rank`` of ``world_size`` takes every ``world_size``-th of them, none dropped."""

    def __init__(
        self,
        data: InMemoryImages,
        batch_size: int,
        make: BatchMaker,
        rows: torch.Tensor | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        super().__init__(data, batch_size, make, rank, world_size, shuffle)
        # A validation split of a few rows reads those rows each epoch: normalising the whole
        # training file for them would hold 4 bytes a pixel of it for little gain.
        self.normalise_set = rows is None or 2 * len(rows) >= len(data)
        if rows is None:
            rows = torch.arange(len(data))
        self.rows = rows[rank::world_size].to(data.images.device)

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.rows), self.batch_size):
            rows = self.rows[start : start + self.batch_size]
            yield self.make(self.data, rows, normalise_set=self.normalise_set)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed for epoch ``epoch`` of a run seeded with ``seed`` (well mixed, so
    neighbouring seeds and epochs give unrelated permutations)."""
    state = np.random.SeedSequence([seed % 2**64, epoch]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


@dataclass
class _EpochPlan:
    """Epoch ``epoch``'s order of rows and augmentation draws, on the data's device; the seed
    of each of this process's batches (for the batch maker's policy, erasing and mixing) on the
    CPU."""

    epoch: int
    rows: torch.Tensor
    shifts: torch.Tensor | None
    flips: torch.Tensor | None
    seeds: torch.Tensor | None = None


class ShuffledBatches(_Batches):
    """Training batches: per epoch, a seeded permutation of ``rows`` (all when None), augmented.

    An iterable with a length (batches per epoch, the last one possibly smaller), each pass one
    epoch. Works with Lightning's ``Trainer`` as a ``train_dataloader``, and alone::

        loader = ShuffledBatches(data, 100, BatchMaker([0.5], [0.5], 1), seed=0)
        for epoch in range(3):
            for x, y in loader: ...

    Args:
        seed: the run's seed; epoch ``e`` uses :func:`epoch_seed` ``(seed, e)``. Under DDP every
            process must pass the same seed (:func:`process_share` explains the shares).
        rank, world_size: this process's index and the number of processes (DDP); each process
            draws the same permutation and takes its disjoint, equally long share of it.
        epoch_source: returns the current epoch (``lambda: trainer.current_epoch``), read when
            an epoch's first batch is made; without it, :meth:`set_epoch` or the count of passes
            that reached their end.
        position_source: returns how many batches of the current epoch the trainer has taken
            for training steps; with it, :meth:`state_dict` never counts a batch that a fetcher
            drew ahead (Lightning does not when, as here, the loader has a length).
        shuffle: false keeps ``rows`` in their order every epoch (augmentation is still drawn).
    """

    def __init__(
        self,
        data: InMemoryImages,
        batch_size: int,
        make: BatchMaker,
        seed: int,
        rows: torch.Tensor | None = None,
        epoch_source: Callable[[], int] | None = None,
        position_source: Callable[[], int | None] | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
    ):
        super().__init__(data, batch_size, make, rank, world_size, shuffle)
        self.seed = int(seed)
        self.rows = rows.cpu() if rows is not None else torch.arange(len(data))
        self.epoch_source = epoch_source
        self.position_source = position_source
        self._epoch = 0  # for use without epoch_source
        self._plan: _EpochPlan | None = None
        self._position = 0  # batches of self._plan.epoch made so far
        self._resume: dict[str, int] | None = None

    @property
    def num_samples(self) -> int:
        """Training rows of all processes together."""
        return len(self.rows)

    @property
    def samples_per_process(self) -> int:
        """This process's share of an epoch (``num_samples`` on one process)."""
        return self.num_samples // self.world_size

    def __len__(self) -> int:
        return math.ceil(self.samples_per_process / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass draws (without ``epoch_source``)."""
        self._epoch = epoch

    def current_epoch(self) -> int:
        return self.epoch_source() if self.epoch_source is not None else self._epoch

    def plan(self, epoch: int) -> _EpochPlan:
        """Epoch ``epoch``'s permutation and augmentation draws: drawn on the CPU from their own
        generator (the same on any device), moved to the data's device in one copy each."""
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = self.num_samples
        order = self.rows[torch.randperm(n, generator=generator)] if self.shuffle else self.rows
        shifts = flips = None
        if self.make.max_shift > 0:
            shifts = torch.randint(0, 2 * self.make.max_shift + 1, (n, 2), generator=generator)
        if self.make.mirror:
            flips = torch.randint(0, 2, (n,), generator=generator).bool()
        seeds = None
        if self.make.draws_per_batch:
            # Drawn last, so the order, shifts and flips stay those of a run without them; one
            # row of seeds per process, so that processes draw differently for their own images.
            grid = (self.world_size, len(self))
            seeds = torch.randint(0, 2**62, grid, generator=generator)[self.rank]
        if self.world_size > 1:
            # Drawn for all rows as on one process, then this process's share of them.
            share = slice(self.rank, self.samples_per_process * self.world_size, self.world_size)
            order = order[share]
            shifts = None if shifts is None else shifts[share]
            flips = None if flips is None else flips[share]
        device = self.data.images.device
        return _EpochPlan(
            epoch,
            order.to(device, non_blocking=True),
            None if shifts is None else shifts.to(device, non_blocking=True),
            None if flips is None else flips.to(device, non_blocking=True),
            seeds,
        )

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # A generator: nothing happens until the first batch is asked for, so the epoch is read
        # then (Lightning creates the iterator before it updates the epoch on a resumed run), and
        # iterators made only to check that this is iterable change nothing.
        epoch = self.current_epoch()
        start = 0
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == epoch and resume["batches_done"] < len(self):
            start = resume["batches_done"]
        if self._plan is None or self._plan.epoch != epoch:
            self._plan = self.plan(epoch)
        plan = self._plan
        self._position = start
        for k in range(start, len(self)):
            window = slice(k * self.batch_size, (k + 1) * self.batch_size)
            batch = self.make(
                self.data,
                plan.rows[window],
                None if plan.shifts is None else plan.shifts[window],
                None if plan.flips is None else plan.flips[window],
                None if plan.seeds is None else int(plan.seeds[k]),
            )
            self._position = k + 1
            yield batch
        if self.epoch_source is None:
            self._epoch = epoch + 1

    def batches_done(self) -> int:
        """Batches of the current epoch consumed by training steps."""
        done = self._position
        if self.position_source is not None:
            taken = self.position_source()
            if taken is not None:
                done = min(done, taken)
        return done

    def state_dict(self) -> dict[str, int]:
        """Where training is: ``epoch``, ``batches_done`` (of that epoch, by training steps,
        the same on every DDP process), ``seed``, and ``num_samples``, ``batch_size`` and, under
        DDP, ``world_size`` to check a resumed run against."""
        if self._resume is not None:  # loaded and not started yet: still the same place
            return dict(self._resume)
        if self._plan is None:
            epoch, done = self.current_epoch(), 0
        else:
            epoch, done = self._plan.epoch, self.batches_done()
        state = {
            "epoch": epoch,
            "batches_done": done,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
        }
        if self.world_size > 1:
            state["world_size"] = self.world_size
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state`` (see :meth:`state_dict`): the next pass over the saved epoch
        starts at its next batch, with the saved seed."""
        saved = (state.get("num_samples"), state.get("batch_size"))
        if saved != (self.num_samples, self.batch_size):
            raise LabError(
                f"the checkpoint was saved training on {saved[0]} images in batches of "
                f"{saved[1]}, this run has {self.num_samples} in batches of {self.batch_size}; "
                "resume with the same data.val_size and data.batch_size"
            )
        saved_processes = int(state.get("world_size", 1))
        if saved_processes != self.world_size:
            # Another process count shares the permutation out differently: the saved position
            # would skip or repeat images of the epoch.
            raise LabError(
                f"the checkpoint was saved training on {saved_processes} process(es), this run "
                f"has {self.world_size}; resume with the same trainer.devices and "
                "trainer.num_nodes"
            )
        self.seed = int(state["seed"])
        self._plan = None
        self._resume = {k: int(v) for k, v in state.items()}
        if self.epoch_source is None:
            self._epoch = self._resume["epoch"]


def process_share(trainer: Any) -> dict[str, int]:
    """``rank`` and ``world_size`` of this process in ``trainer``'s run, as the loaders take
    them (``{}`` without a trainer: the whole data set)."""
    if trainer is None or trainer.world_size == 1:
        return {}
    return {"rank": trainer.global_rank, "world_size": trainer.world_size}


def shared_seed(trainer: Any) -> int:
    """The run's seed (``torch.initial_seed()``, read without drawing from the RNG), the same on
    every DDP process: rank 0's, so that an unseeded run (``seed=null``) still shares out one
    permutation. A collective call: every process must make it."""
    seed = torch.initial_seed()
    if trainer is None or trainer.world_size == 1:
        return seed
    return int(trainer.strategy.broadcast(seed, src=0))


# --- one datamodule's fast path ---------------------------------------------------------------


def use_fast_path(fast: Any, unavailable: str | None, explain: bool) -> bool:
    """Whether a datamodule takes the fast path for ``data.fast`` (auto, true or false), where
    ``unavailable`` says why it cannot (None: it can). ``true`` where it cannot is a LabError
    saying why; ``auto`` there logs why when ``explain`` (a dataset held in memory whose options
    rule the fast path out, not one that never could have it)."""
    if not (fast is True or fast is False or fast == "auto"):
        raise LabError(f"data.fast={fast!r} is not allowed; use auto, true or false")
    if fast is True and unavailable is not None:
        raise LabError(f"data.fast=true cannot be used: {unavailable}; use data.fast=auto or false")
    if fast == "auto" and unavailable is not None and explain:
        log.info("data.fast=auto: %s; using torchvision's DataLoader", unavailable)
    return fast is not False and unavailable is None


class FastLoaders:
    """One datamodule's fast path: its images held as tensors, its loaders, and the train
    loader's place in checkpoints.

    The images stay on the CPU until a loader is asked for on a trainer's device
    (``trainer.strategy.root_device``; the CPU without a trainer), then are copied there once.
    Under DDP each process batches its own share (:func:`process_share`).

    Args:
        name: the dataset's name, for the log lines.
        train, test: the whole training file and the test set.
        batch_size, shuffle: the datamodule's.
        train_batches: makes training batches, with the datamodule's augmentation.
        eval_batches: makes validation and test batches, never augmented.
        train_rows, val_rows: the datamodule's split, as rows of ``train`` (None: all rows for
            training, no validation).
        ignored: the datamodule's options that mean nothing here (no worker, no host-to-device
            copy per batch), named in the log line.
    """

    def __init__(
        self,
        name: str,
        train: InMemoryImages,
        test: InMemoryImages,
        batch_size: int,
        train_batches: BatchMaker,
        eval_batches: BatchMaker,
        train_rows: torch.Tensor | None = None,
        val_rows: torch.Tensor | None = None,
        shuffle: bool = True,
        ignored: Sequence[str] = (),
    ):
        self.name = name
        self.memory = (train, test)
        self.batch_size = batch_size
        self.train_batches = train_batches
        self.eval_batches = eval_batches
        self.train_rows = train_rows
        self.val_rows = val_rows
        self.shuffle = shuffle
        self._on_device: tuple[torch.device, InMemoryImages, InMemoryImages] | None = None
        # The train loader's place, saved with the datamodule in checkpoints (state_dict) and
        # handed to the next train loader made after a restore.
        self._train_loader: ShuffledBatches | None = None
        self._train_resume: dict[str, int] | None = None
        log.info(
            "data.fast: %s held in memory (%d + %d images, %.1f MB), batched on the training "
            "device%s",
            name,
            len(train),
            len(test),
            (train.nbytes + test.nbytes) / 2**20,
            f"; {' and '.join(ignored)} ignored" if ignored else "",
        )

    def images_on(self, trainer: Any) -> tuple[InMemoryImages, InMemoryImages]:
        """``(train, test)`` on ``trainer``'s device, copied there the first time."""
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        if self._on_device is None or self._on_device[0] != device:
            self._on_device = None  # release the copy on the previous device first
            train, test = self.memory
            self._on_device = (device, train.to(device), test.to(device))
            log.info("data.fast: %s images on %s", self.name, device)
        return self._on_device[1], self._on_device[2]

    def train_loader(self, trainer: Any) -> ShuffledBatches:
        train, _ = self.images_on(trainer)
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
            self.train_batches,
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

    def val_loader(self, trainer: Any) -> OrderedBatches:
        train, _ = self.images_on(trainer)
        return self._in_order(train, self.val_rows, trainer)

    def test_loader(self, trainer: Any) -> OrderedBatches:
        _, test = self.images_on(trainer)
        return self._in_order(test, None, trainer)

    def _in_order(
        self, data: InMemoryImages, rows: torch.Tensor | None, trainer: Any
    ) -> OrderedBatches:
        return OrderedBatches(
            data, self.batch_size, self.eval_batches, rows, **process_share(trainer)
        )

    def state_dict(self) -> dict[str, dict[str, int]]:
        """The last train loader's place (``{}`` before one is made)."""
        if self._train_loader is None:
            return {}
        return {"train_batches": self._train_loader.state_dict()}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        """Where the next train loader starts (see :meth:`ShuffledBatches.load_state_dict`)."""
        self._train_resume = state.get("train_batches")
