"""Helpers the tests share: generated datasets in the real on-disk formats, the real Hydra config
composed and shrunk, ``python train.py`` as a user runs it, readers of what runs write
(TensorBoard scalars, metrics.json, sweep tables), and faults injected through the config.

Every test file imports what it shares from here, never from another test file; ``conftest.py``
holds only the fixtures.

The generated data: MNIST-style IDX files (:func:`write_torchvision_layout`); CIFAR-10 batches
as the originals are (:func:`write_cifar10_layout`): Python 2 pickles (protocol 2) of dicts whose
keys and texts are Python 2 ``str``, so that they load with ``encoding="bytes"`` (``b"data"``)
and with ``encoding="latin1"`` as torchvision loads them (``"data"``); folders of real PNG and
JPEG files of mixed sizes and PIL modes, as a folder gathered by hand is
(:func:`write_class_folders`). Their images depend on their labels, so a model can learn them,
and accuracy above chance shows that images and labels stayed paired through the loader.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import datamodules  # noqa: F401  (registers the resolvers the data configs use)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# --- the real config, shrunk ------------------------------------------------------------------


def compose_train(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    """The real ``conf/train.yaml`` (or ``conf/<config_name>.yaml``) composed as ``python
    train.py <overrides>`` (the tool reading it) would."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name=config_name, overrides=overrides or [], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


# Generated data is no original copy: its MD5s differ (data=imagefolder has no such check).
GENERATED = "data.verify_checksums=false"
# Shrinks a run to seconds on generated data: tiny validation split, two batches per stage, no
# progress bar.
FAST = [
    GENERATED,
    "data.val_size=100",
    "data.batch_size=32",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "~callbacks.progress_bar",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
]


def run_train(*args: str, data_dir: Path, log_dir: Path) -> subprocess.CompletedProcess:
    """``python train.py <args>`` in the repository, data and logs where the test says."""
    return run_tool("train.py", *args, data_dir=data_dir, log_dir=log_dir)


def run_tool(script: str, *args: str, data_dir: Path, log_dir: Path) -> subprocess.CompletedProcess:
    """``python <script> <args>`` in the repository, data and logs where the test says; a
    ``script`` without ``.py`` is a module: ``python -m lightning_models.tools.lr_find``."""
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir), "LAB_LOG_DIR": str(log_dir)}
    command = [script] if script.endswith(".py") else ["-m", script]
    return subprocess.run(
        [sys.executable, *command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- what runs write --------------------------------------------------------------------------


def scalar_tags(run_dir: Path) -> set[str]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return set(events.Tags()["scalars"])


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard files, as (step, value) sorted by step: the order in
    which the reader merges a run's event files (fit, then test) is not part of what is
    compared."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {
        t: sorted((e.step, e.value) for e in events.Scalars(t)) for t in events.Tags()["scalars"]
    }


def event_files(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def job_dirs(sweep: Path) -> list[Path]:
    return sorted(
        (p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )


def the_sweep(log_dir: Path) -> Path:
    """The one sweep folder under ``log_dir``; no single-run folder beside it."""
    assert not (log_dir / "train" / "runs").exists()
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep


def table_rows(sweep: Path) -> list[list[str]]:
    """The per-job table of summary.md as rows of cells, header first."""
    lines = (sweep / "summary.md").read_text().split("## mean")[0].splitlines()
    rows = [
        [c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")
    ]
    return [rows[0], *rows[2:]]  # the rule line dropped


def picture(png: Path | bytes) -> np.ndarray:
    """A PNG (a file or its bytes) decoded in full as H x W x 3 uint8; anything else raises."""
    with Image.open(png if isinstance(png, Path) else io.BytesIO(png), formats=["PNG"]) as image:
        return np.asarray(image.convert("RGB"))


def drawn(pixels: np.ndarray) -> bool:
    """Not blank: several colours, none of them covering (nearly) the whole picture."""
    _, counts = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0, return_counts=True)
    return len(counts) > 2 and counts.max() < 0.99 * counts.sum()


def tensorboard_image(run_dir: Path, tag: str) -> np.ndarray:
    """The last image of ``tag`` in a run's TensorBoard files, decoded."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return picture(events.Images(tag)[-1].encoded_image_string)


def hparams_columns(run_dir: Path) -> dict[str, object]:
    """TensorBoard's HParams tab of a run, as its event files hold it: column name -> value."""
    from tensorboard.plugins.hparams import metadata

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    columns = {}
    for name, value in metadata.parse_session_start_info_plugin_data(content).hparams.items():
        kind = value.WhichOneof("kind")  # a protobuf Value: number_value, string_value, ...
        columns[name] = getattr(value, kind) if kind else None
    return columns


# --- MNIST-style IDX files -------------------------------------------------------------------

# IDX magic numbers: 0x08 = unsigned byte, then the number of dimensions.
_MAGIC = {1: 0x00000801, 3: 0x00000803}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array of 1 (labels) or 3 (images) dimensions."""
    header = struct.pack(">I", _MAGIC[array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_dataset(n_train: int, n_test: int, seed: int = 0) -> dict[str, bytes]:
    """File name → IDX bytes of a random 10-class dataset whose images depend on their label.

    Each class gets a brighter horizontal band at its own height, so a model can learn it and
    accuracy above chance shows that labels and images stayed paired through the loader.
    """
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        images = rng.integers(0, 100, size=(n, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            images[i, 2 + 2 * label : 4 + 2 * label, :] = 255
        files[f"{prefix}-images-idx3-ubyte"] = idx_bytes(images)
        files[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(labels)
    return files


def write_torchvision_layout(root: Path, name: str, n_train=600, n_test=200, seed=0) -> Path:
    """``<root>/<name>/raw/*-ubyte`` as torchvision's MNIST and FashionMNIST expect."""
    raw = root / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for fname, data in idx_dataset(n_train, n_test, seed).items():
        (raw / fname).write_bytes(data)
    return root


def write_gz_folder(folder: Path, n_train=600, n_test=200, seed=0) -> Path:
    """The four ``*.gz`` files flat in one folder, as Debian's dataset-fashion-mnist ships them."""
    folder.mkdir(parents=True, exist_ok=True)
    for fname, data in idx_dataset(n_train, n_test, seed).items():
        (folder / f"{fname}.gz").write_bytes(gzip.compress(data))
    return folder


# --- CIFAR-10 batch files --------------------------------------------------------------------

LABEL_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
PIXELS = 3 * 32 * 32  # one image = its R plane, then G, then B, each 32 rows of 32


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: the C one cannot hook bytes
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), as cPickle did on Python 2."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj) -> bytes:
    """Protocol 2 pickle with Python 2 strings, naming numpy's module as numpy 1 did."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    # numpy 2 calls its module numpy._core; the original files (and numpy 2) know numpy.core.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n", 1)


def batch_bytes(data: np.ndarray, labels: list[int], batch_label: str, first: int = 0) -> bytes:
    """One batch file: ``data`` is N x 3072 uint8, each row an image's R, G, B planes."""
    assert data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXELS
    return py2_pickle(
        {
            b"batch_label": batch_label.encode(),
            b"labels": [int(label) for label in labels],
            b"data": data,
            b"filenames": [f"generated_{first + i:05d}.png".encode() for i in range(len(data))],
        }
    )


def meta_bytes(label_names: list[str], per_batch: int) -> bytes:
    return py2_pickle(
        {
            b"num_cases_per_batch": per_batch,
            b"label_names": [name.encode() for name in label_names],
            b"num_vis": PIXELS,
        }
    )


def images_for(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """N x 3072 uint8 noise with a bright band at a height that depends on the label.

    A model can learn the band, so accuracy above chance shows that labels and images stayed
    paired through the loader.
    """
    images = rng.integers(0, 100, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i, :, 2 + 3 * label : 4 + 3 * label, :] = 255
    return images.reshape(len(labels), PIXELS)


def write_cifar10_layout(
    root: Path,
    per_batch: int = 40,
    n_test: int = 60,
    seed: int = 0,
    label_names: list[str] = LABEL_NAMES,
) -> Path:
    """``<root>/cifar-10-batches-py/`` as torchvision's CIFAR10 expects.

    Five training batches of ``per_batch`` images, ``test_batch`` of ``n_test``, and
    ``batches.meta`` naming the classes.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = [(f, f"training batch {i} of 5", per_batch) for i, f in enumerate(TRAIN_FILES, 1)]
    batches.append(("test_batch", "testing batch 1 of 1", n_test))
    for k, (fname, batch_label, n) in enumerate(batches):
        labels = rng.integers(0, 10, size=n)
        data = images_for(labels, rng)
        (folder / fname).write_bytes(batch_bytes(data, labels.tolist(), batch_label, k * per_batch))
    (folder / "batches.meta").write_bytes(meta_bytes(label_names, per_batch))
    return root


# --- folders of image files ------------------------------------------------------------------

CLASSES = ("beach", "forest", "street")
# (width, height, PIL mode, file suffix); JPEG stores no alpha or palette, so those are PNG.
VARIANTS = (
    (64, 64, "RGB", ".jpg"),
    (48, 32, "L", ".png"),
    (40, 56, "RGBA", ".png"),
    (30, 30, "RGB", ".png"),
    (72, 50, "P", ".png"),
    (33, 47, "L", ".jpeg"),
)


def image_for(label: int, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy RGB picture whose class shows twice: a bright band at a label-dependent height
    (seen in greyscale too) and the label's colour channel raised (seen in RGB)."""
    pixels = rng.integers(0, 90, size=(height, width, 3), dtype=np.uint8)
    pixels[..., label % 3] += 60
    top = (label * height) // (len(CLASSES) + 1)
    pixels[top : top + max(2, height // 6)] = 250
    return pixels


def write_image(path: Path, label: int, variant: tuple, rng: np.random.Generator) -> Path:
    width, height, mode, _suffix = variant
    image = Image.fromarray(image_for(label, width, height, rng), "RGB")
    if mode == "P":
        image = image.quantize(colors=64)
    elif mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"quality": 90} if path.suffix in (".jpg", ".jpeg") else {}
    image.save(path, **options)
    return path


def write_class_folders(
    root: Path, per_class: int = 20, classes=CLASSES, seed: int = 0, start: int = 0
) -> Path:
    """``root/<class>/img_NNN.<png|jpg>``: ``per_class`` images per class, every variant in turn."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        for i in range(start, start + per_class):
            variant = VARIANTS[i % len(VARIANTS)]
            write_image(root / name / f"img_{i:03d}{variant[3]}", label, variant, rng)
    return root


def write_split_folders(
    root: Path, n_train: int = 20, n_test: int = 6, n_val: int = 0, classes=CLASSES, seed: int = 0
) -> Path:
    """``root/train/<class>/``, ``root/test/<class>/`` and, when ``n_val``, ``root/val/<class>/``
    (file names differ between splits, so a test can tell where an image came from)."""
    counts = {"train": n_train, "test": n_test, "val": n_val}
    start = 0
    for offset, (split, n) in enumerate(counts.items()):
        if n:
            write_class_folders(root / split, n, classes, seed=seed + offset, start=start)
            start += n
    return root


def write_litter(folder: Path) -> None:
    """What real folders also hold and ImageFolder must skip: notes, hidden files and folders."""
    (folder / "README.txt").write_text("not an image\n")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._img_000.jpg").write_bytes(b"\0\5\26\7 AppleDouble resource fork")
    (folder / ".ipynb_checkpoints").mkdir(exist_ok=True)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file short, as an interrupted copy does: its header still reads, its pixels not."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- faults injected through the config ------------------------------------------------------


class NaNLossAfter(nn.CrossEntropyLoss):
    """Cross-entropy that returns NaN from the ``after_steps``-th training step on (0-based).

    Only training-mode calls count (the loss module follows the classifier's train/eval mode), so
    validation and test see the real loss.
    """

    def __init__(self, after_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.after_steps = after_steps
        self.calls = 0

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = super().forward(input, target)
        if self.training:
            self.calls += 1
            if self.calls > self.after_steps:
                return loss * float("nan")
        return loss


class KillAt(L.Callback):
    """SIGKILLs its own process at a known point of a fit, once: as a power cut would, with no
    chance to save anything.

    Exactly one of ``step`` (at the start of the training batch that would make global step
    ``step + 1``), ``validation_epoch`` (at the start of that epoch's validation, not the sanity
    check) or ``epoch_start`` (at the start of that training epoch, right after the previous
    epoch's checkpoint). ``once`` is a file created just before the kill; while it exists the
    callback does nothing, so the resumed run can keep the very same overrides. ``steps`` (a
    list) kills at each of those steps in turn, once each (``once`` then names one file per
    step, ``<once>.<step>``): a run resumed again and again with the same overrides. The loggers are
    flushed first (``flush``): the worst case for what was logged after the last checkpoint,
    which is then on disk; without, what they held back since the checkpoint is lost.
    """

    def __init__(
        self,
        once: str,
        step: int | None = None,
        validation_epoch: int | None = None,
        epoch_start: int | None = None,
        flush: bool = True,
        steps: list[int] | None = None,
    ):
        self.once = Path(once)
        self.steps = list(steps or [])
        self.flush = flush
        self.step = step
        self.validation_epoch = validation_epoch
        self.epoch_start = epoch_start

    def _kill(self, trainer: L.Trainer, once: Path | None = None) -> None:
        once = once or self.once
        if once.exists():
            return
        for logger in trainer.loggers if self.flush else ():
            logger.save()
        once.touch()
        os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.step is not None and trainer.global_step == self.step:
            self._kill(trainer)
        if trainer.global_step in self.steps:
            self._kill(trainer, self.once.with_name(f"{self.once.name}.{trainer.global_step}"))

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.validation_epoch:
            self._kill(trainer)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch_start:
            self._kill(trainer)


class SignalAt(Checkpoint):
    """Sends ``signum`` to its own process once, when training epoch ``epoch`` ends, at the worst
    moment for a preemption: right after that epoch's last.ckpt is written and before Lightning
    hands the epoch's train metrics to the loggers.

    A ``Checkpoint`` only so that Lightning calls it where it calls the checkpoint callbacks: after
    them (they come last, in their order) and after the LightningModule's ``on_train_epoch_end``.
    Only in a process with a Python handler for the signal (a submitit job's; the DDP processes
    the lab starts have the default, which would kill them). ``once`` as in :class:`KillAt`.
    """

    def __init__(self, once: str, epoch: int, signum: int = signal.SIGUSR2):
        self.once = Path(once)
        self.epoch = epoch
        self.signum = signum

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != self.epoch or self.once.exists():
            return
        if callable(signal.getsignal(self.signum)):
            self.once.touch()
            os.kill(os.getpid(), self.signum)


# --- what a run's steps were given -------------------------------------------------------------

# SeenBatches.key -> {"train": (x, y), "val": (x, y)}: written inside a run, read by the test.
SEEN_BATCHES: dict[str, dict[str, tuple[torch.Tensor, ...]]] = {}


class SeenBatches(L.Callback):
    """Keeps the first training batch and the first validation batch (not the sanity check's) of
    a run as its steps got them, after the transfer hooks, in ``SEEN_BATCHES[key]`` (the callback
    is built from the config inside the run, so the test reads them there)."""

    def __init__(self, key: str):
        self.key = key
        SEEN_BATCHES[key] = {}

    def _keep(self, stage: str, batch) -> None:
        if stage not in SEEN_BATCHES[self.key]:
            SEEN_BATCHES[self.key][stage] = tuple(t.detach().cpu().clone() for t in batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._keep("train", batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._keep("val", batch)


class StopAfterEpoch(L.Callback):
    """Ends the fit after training epoch ``epoch`` (0-based), as a run stopped there would end,
    its checkpoints of that epoch written: the run resumed from its last.ckpt with the same
    overrides must end as one that was never stopped (an in-process stand-in for
    :class:`KillAt`, for fits that end at epoch boundaries)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True
