"""Pictures of a test run, drawn with PIL: a confusion matrix and grids of labelled images.

Pure functions: numbers, names and uint8 images in, an ``H x W x 3`` uint8 array out, ready for
``SummaryWriter.add_image(tag, array, step, dataformats="HWC")``. They know nothing of Lightning,
so :mod:`lightning_models.callbacks` stays about *when* to draw and these about *how*.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
# Shade of a cell holding a whole row (the darkest); an empty cell stays white.
FULL = np.array((8, 48, 107), dtype=np.float64)
ARROW = "→"
# Joins words that a caption must not break apart ("Ankle boot"); drawn as a plain space.
GLUE = "\xa0"
PAD = 4


# --- text --------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's own font, so no font file has to exist on the machine (scalable since Pillow 10.1)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # older Pillow: the fixed-size bitmap font
        return ImageFont.load_default()


def printable(text: str, face) -> str:
    """``text`` as ``face`` can draw it: the bundled fonts lack "→" and the non-breaking space
    (drawn as boxes), and the bitmap font knows Latin-1 only (anything else raises)."""
    text = text.replace(GLUE, " ")
    if ARROW in text and not _has_glyph(face, ARROW):
        text = text.replace(ARROW, "->")
    try:
        face.getbbox(text)
    except UnicodeEncodeError:
        text = text.encode("latin-1", "replace").decode("latin-1")
    return text


def _has_glyph(face, char: str) -> bool:
    """False when ``char`` renders as the font's "missing glyph" box."""
    try:
        missing = face.getmask("\ue000")  # a private-use code point no font maps
        return bytes(face.getmask(char)) != bytes(missing)
    except UnicodeEncodeError:
        return False


def text_size(text: str, face) -> tuple[int, int]:
    """Width and height in pixels of one line of ``text``."""
    left, top, right, bottom = face.getbbox(printable(text, face))
    return right - left, bottom - top


def line_height(face) -> int:
    """Pixels from where a line is drawn to below its lowest descender, plus a gap: text is drawn
    from its origin, above the glyphs' top, so the height of the glyphs alone would overlap."""
    return face.getbbox("Ag|")[3] + 2


def wrap(text: str, width: int, face) -> list[str]:
    """Greedy word wrap to ``width`` pixels at plain spaces (not at :data:`GLUE`); a word wider
    than ``width`` gets a line of its own."""
    lines: list[str] = []
    for word in text.split(" "):
        if not word:
            continue
        if lines and text_size(f"{lines[-1]} {word}", face)[0] <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def text_image(text: str, size: int = 14) -> np.ndarray:
    """One line of black text on white: a figure that says why there is nothing to show."""
    face = font(size)
    width, height = text_size(text, face)
    image = Image.new("RGB", (width + 4 * PAD, height + 4 * PAD), WHITE)
    ImageDraw.Draw(image).text((2 * PAD, 2 * PAD), printable(text, face), fill=BLACK, font=face)
    return np.asarray(image)


def _rotated_text(text: str, face, fill=BLACK) -> Image.Image:
    """``text`` turned 90° counter-clockwise (read bottom-up), on a transparent background."""
    text = printable(text, face)
    left, top, right, bottom = face.getbbox(text)
    strip = Image.new("RGBA", (right - left + 2, bottom - top + 2), (255, 255, 255, 0))
    ImageDraw.Draw(strip).text((1 - left, 1 - top), text, fill=fill, font=face)
    return strip.rotate(90, expand=True)


# --- confusion matrix --------------------------------------------------------------------------


def shade(share: float) -> tuple[int, int, int]:
    """White for 0, dark blue for 1, linear between: the colour of a cell."""
    rgb = np.array(WHITE, dtype=np.float64) * (1 - share) + FULL * share
    return tuple(int(round(c)) for c in rgb)


def row_shares(matrix: np.ndarray) -> np.ndarray:
    """Each count over its row's total: a class's share of predictions, whatever its size."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def confusion_matrix_image(
    matrix: np.ndarray | torch.Tensor, class_names: Sequence[str], font_size: int = 12
) -> np.ndarray:
    """The confusion matrix as a picture: rows are true classes, columns predicted ones.

    Every cell shows its count; its shade is the count's share of the row, so a small class's
    mistakes are as visible as a large one's. Class names label both axes (columns bottom-up).
    """
    counts = np.asarray(matrix, dtype=np.int64)
    n = counts.shape[0]
    if counts.shape != (n, n) or len(class_names) != n:
        raise ValueError(
            f"confusion matrix of shape {counts.shape} does not fit {len(class_names)} class names"
        )
    face, title_face = font(font_size), font(font_size + 2)
    names = [printable(str(c), face) for c in class_names]
    widest_count = max(text_size(str(v), face)[0] for v in counts.flat)
    cell = max(3 * line_height(face), widest_count + 3 * PAD)
    name_w = max(text_size(c, face)[0] for c in names)
    title_h = line_height(title_face)

    left = PAD + title_h + PAD + name_w + 2 * PAD
    top = PAD
    bottom = top + n * cell
    width = left + n * cell + 2 * PAD
    height = bottom + 2 * PAD + name_w + PAD + title_h + PAD
    image = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(image)

    shares = row_shares(counts)
    for i in range(n):
        for j in range(n):
            _draw_cell(
                draw, face, left + j * cell, top + i * cell, cell, counts[i, j], shares[i, j]
            )
        # Row label right-aligned against the matrix, centred on its row.
        w, h = text_size(names[i], face)
        y = top + i * cell + (cell - line_height(face)) // 2
        draw.text((left - 2 * PAD - w, y), names[i], fill=BLACK, font=face)
        # Column label turned, hanging below the matrix, centred on its column.
        label = _rotated_text(names[i], face)
        x = left + i * cell + (cell - label.width) // 2
        image.paste(label, (x, bottom + 2 * PAD), label)
    draw.rectangle((left, top, left + n * cell, bottom), outline=BLACK)

    caption = "predicted class"
    w, _ = text_size(caption, title_face)
    draw.text(
        (left + (n * cell - w) // 2, height - PAD - title_h), caption, fill=BLACK, font=title_face
    )
    axis = _rotated_text("true class", title_face)
    image.paste(axis, (PAD, top + (n * cell - axis.height) // 2), axis)
    return np.asarray(image)


def _draw_cell(draw: ImageDraw.ImageDraw, face, x: int, y: int, size: int, count, share) -> None:
    draw.rectangle((x, y, x + size, y + size), fill=shade(share), outline=(200, 200, 200))
    text = str(int(count))
    w, _ = text_size(text, face)
    # White on the dark half of the scale, black on the light half: readable on every shade.
    colour = WHITE if share > 0.5 else BLACK
    draw.text(
        (x + (size - w) // 2, y + (size - line_height(face)) // 2), text, fill=colour, font=face
    )


# --- labelled grids ----------------------------------------------------------------------------


def to_uint8_hwc(images: np.ndarray | torch.Tensor | Sequence) -> np.ndarray:
    """``N x H x W x C`` uint8 (C = 1 or 3) from uint8, or floats in [0, 1]; ``N x C x H x W``
    (channels first, as torch keeps images) is recognised by its small second axis."""
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    array = np.asarray(array)
    if array.ndim == 3:  # N x H x W: grey without a channel axis
        array = array[..., None]
    if array.ndim != 4:
        raise ValueError(f"expected a batch of images (N x H x W x C), got shape {array.shape}")
    if array.shape[-1] not in (1, 3) and array.shape[1] in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0.0, 1.0) * 255).round().astype(np.uint8)
    return array


def display_scale(height: int, width: int, target: int = 96) -> int:
    """Whole-number upscaling that brings small images (MNIST's 28 px) near ``target`` pixels,
    with crisp pixels, so they are large enough to see beside their captions."""
    return max(1, target // max(height, width))


def labelled_grid(
    images: np.ndarray | torch.Tensor | Sequence,
    captions: Sequence[str],
    columns: int = 8,
    font_size: int = 12,
    max_side: int = 160,
) -> np.ndarray:
    """Images in rows of ``columns``, each with its caption (word-wrapped) written under it.

    ``images``: see :func:`to_uint8_hwc`; grey ones stay grey. Join words with :data:`GLUE` to
    keep them on one line (a class name). Small images are enlarged by a
    whole factor, large ones shrunk to ``max_side`` pixels, so a grid stays a sensible size.
    """
    array = to_uint8_hwc(images)
    if len(array) != len(captions):
        raise ValueError(f"{len(array)} images but {len(captions)} captions")
    if len(array) == 0:
        return text_image("no images")
    face = font(font_size)
    pictures = [_resized(Image.fromarray(_rgb(a)), max_side) for a in array]
    tile_w = max(
        max(p.width for p in pictures),
        max(text_size(word, face)[0] for c in captions for word in c.split(" ")),
    )
    lines = [wrap(c, tile_w, face) for c in captions]
    tile_h = max(p.height for p in pictures) + PAD + line_height(face) * max(map(len, lines))
    tiles = [_tile(p, text, tile_w, tile_h, face) for p, text in zip(pictures, lines, strict=True)]
    batch = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    # White gaps between tiles; make_grid only lays the equal-sized tiles out in rows.
    grid = make_grid(batch, nrow=max(1, min(columns, len(tiles))), padding=2 * PAD, pad_value=255)
    return np.ascontiguousarray(grid.permute(1, 2, 0).numpy())


def _rgb(array: np.ndarray) -> np.ndarray:
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array


def _resized(picture: Image.Image, max_side: int) -> Image.Image:
    factor = display_scale(picture.height, picture.width)
    if factor > 1:
        return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST)
    if max(picture.size) > max_side:
        picture = picture.copy()
        picture.thumbnail((max_side, max_side), Image.BILINEAR)
    return picture


def _tile(picture: Image.Image, lines: list[str], width: int, height: int, face) -> np.ndarray:
    """One image centred at the top of a white tile, its caption lines centred beneath."""
    tile = Image.new("RGB", (width, height), WHITE)
    tile.paste(picture, ((width - picture.width) // 2, 0))
    draw = ImageDraw.Draw(tile)
    y = picture.height + PAD
    for line in lines:
        line = printable(line, face)
        w, _ = text_size(line, face)
        draw.text(((width - w) // 2, y), line, fill=BLACK, font=face)
        y += line_height(face)
    return np.asarray(tile)
