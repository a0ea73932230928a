"""Writes small MNIST-style datasets in the real IDX format torchvision reads."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

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
