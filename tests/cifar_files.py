"""Writes small CIFAR-10-style datasets in the real on-disk format torchvision reads.

The original ``cifar-10-batches-py`` files are Python 2 pickles (protocol 2) of dicts whose keys
and texts are Python 2 ``str``: loaded with ``encoding="bytes"`` they are ``b"data"``,
``b"labels"`` …, loaded with ``encoding="latin1"`` (as torchvision does) they are ``"data"``,
``"labels"`` …. The files written here are the same, so both ways of reading them work as on the
real ones.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

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
