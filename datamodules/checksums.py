"""MD5 sums of the extracted dataset files: a truncated, flipped-byte or missing file is refused,
by name and with how to repair it, before any training on bad data.

torchvision checks only that MNIST's extracted files exist (its MD5s are of the .gz downloads),
so the sums of the extracted files are ours, taken from the original files (identical in Debian's
dataset-fashion-mnist). CIFAR-10's batches are the files torchvision lists MD5s for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from lightning_models.checks import LabError

MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_files(folder: Path, expected: Mapping[str, str], dataset: str, repair: str) -> None:
    """Every ``expected`` file in ``folder`` with its MD5, or one LabError naming the first bad one.

    ``repair`` says how to get a good copy; it ends the sentence.
    """
    for name, md5 in expected.items():
        path = folder / name
        if not path.is_file():
            raise LabError(f"{dataset} file {path} is missing; {repair}")
        actual = md5_of(path)
        if actual != md5:
            raise LabError(
                f"{dataset} file {path} is corrupt or incomplete (MD5 {actual}, expected {md5}); "
                f"{repair}"
            )
