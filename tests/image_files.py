"""Writes small folders of real PNG and JPEG files, in both layouts ImageFolder datasets come in.

Images vary in size, PIL mode (RGB, L, RGBA, palette) and format, as a folder gathered by hand
does; their content depends on the label, so a model can learn them and accuracy above chance
shows that images and labels stay paired through the loader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

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
