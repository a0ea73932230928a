"""Classify image files with a trained checkpoint, preprocessed as its run's test images were.

    python -m lightning_models.tools.predict <run>/checkpoints/epoch_009.ckpt path/to/folder \
        img1.png img2.jpg [--output preds.csv] [--top-k 3] [--batch-size 64]

The model, the image size, the channels, the normalisation and the class names all come from the
config of the run that wrote the checkpoint (``<run dir>/.hydra/config.yaml``), never from this
command line. Folders are walked recursively for image files (torchvision's extensions); a file
named explicitly is tried whatever its extension. Images of any size and PIL mode are converted,
never refused; a file that cannot be read is reported by name and the others are classified.

Output: one row per file in input order (folders in sorted order), as an aligned table on stdout
or as CSV with ``--output``, then a summary line. Exit status: 0 when at least one file was
classified, 1 when none could be, 2 (one sentence on stderr) when the checkpoint or its run dir is
missing or there are no input files at all.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torchvision import transforms
from torchvision.datasets.folder import IMG_EXTENSIONS

import datamodules  # noqa: F401  (registers the config resolvers the data configs use)
from datamodules.image_folder import ImageLoader, is_image_file
from lightning_models.build import instantiate_node as build
from lightning_models.checkpoints import load_checkpoint, run_folder_of
from lightning_models.checks import LabError
from lightning_models.run_config import config_of_checkpoint


@dataclass
class Predictor:
    """A trained model and everything needed to feed it a file as its run fed it test images."""

    model: nn.Module
    transform: transforms.Compose
    loader: ImageLoader
    classes: list[str]
    log_probs: bool
    device: torch.device
    notes: list[str] = field(default_factory=list)
    # What the transform ends with, the shape it gives (C, H, W), and the run's datamodule (None
    # when its data cannot be opened): lightning_models/tools/export.py builds on them.
    normalize: transforms.Normalize | None = None
    image_shape: tuple[int, int, int] = (1, 28, 28)
    datamodule: Any = None


@dataclass
class Row:
    """One input file: its top classes with probabilities, or why it could not be read."""

    path: str
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None


# --- the run of the checkpoint ------------------------------------------------------------------


def run_config(ckpt: Path) -> DictConfig:
    """The trained config of ``ckpt``'s run, with plain ``paths`` so that no interpolation needs
    Hydra (``${hydra:runtime.output_dir}``) and data paths are this invocation's."""
    invocation = OmegaConf.create(
        {
            "ckpt_path": str(ckpt),
            "paths": {
                "data_dir": os.environ.get("LAB_DATA_DIR", "data"),
                "log_dir": os.environ.get("LAB_LOG_DIR", "logs"),
                "output_dir": str(run_folder_of(ckpt)),
            },
        }
    )
    return config_of_checkpoint(invocation)


def load_predictor(ckpt: Path, device: torch.device | None = None) -> Predictor:
    """The model of ``ckpt`` in eval mode on ``device`` (a GPU when there is one), with its
    run's preprocessing and class names."""
    cfg = run_config(ckpt)
    checkpoint = load_checkpoint(ckpt)
    num_classes = (checkpoint.get("hyper_parameters") or {}).get("num_classes")
    if num_classes is not None:
        # An image folder's class count is a resolver that lists data.root; the checkpoint knows
        # it, so the model is rebuilt even where that folder is gone.
        with open_dict(cfg):
            cfg.data.num_classes = num_classes
    model = build(cfg.model)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, RuntimeError) as err:
        raise LabError(
            f"checkpoint {ckpt} does not fit the model of its run's config ({err}); was the run "
            "dir's .hydra/config.yaml edited or the .ckpt copied from another run?"
        ) from None
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()

    notes: list[str] = []
    datamodule = _datamodule(cfg, notes)
    classes = _class_names(datamodule, cfg, int(model.hparams.num_classes), notes)
    # The datamodule's own value counts (its default where the config is silent).
    in_channels = getattr(datamodule, "in_channels", None) or int(cfg.data.in_channels)
    size = getattr(datamodule, "image_size", None) or int(cfg.data.image_size)
    normalize = normalization(cfg, datamodule)
    return Predictor(
        model=model,
        transform=transforms.Compose(
            [transforms.Resize((size, size)), transforms.ToTensor(), normalize]
        ),
        loader=ImageLoader("L" if in_channels == 1 else "RGB"),
        classes=classes,
        log_probs=bool(getattr(model.net, "outputs_log_probs", False)),
        device=device,
        notes=notes,
        normalize=normalize,
        image_shape=(in_channels, size, size),
        datamodule=datamodule,
    )


def _datamodule(cfg: DictConfig, notes: list[str]):
    """The run's datamodule, for its class names and normalisation; None when it cannot be built
    (an image folder that moved), which is no reason not to predict."""
    try:
        return build(cfg.data)
    except LabError as err:
        notes.append(f"the run's data cannot be opened ({err}); labels are class indices")
        return None


def _class_names(datamodule, cfg: DictConfig, outputs: int, notes: list[str]) -> list[str]:
    classes = list(getattr(datamodule, "classes", None) or [])
    if len(classes) != outputs:
        if datamodule is not None:
            notes.append(
                f"the run's data names {len(classes)} classes but the model has {outputs} "
                "outputs; labels are class indices"
            )
        classes = [str(i) for i in range(outputs)]
    return classes


def normalization(cfg: DictConfig, datamodule=None) -> transforms.Normalize:
    """The datamodule's normalisation, the last step of the run's evaluation transform (a square
    resize to ``data.image_size``, ToTensor, this; no augmentation)."""
    normalize = getattr(datamodule, "normalize", None)
    if normalize is None:  # no datamodule: the same statistics, read from the config
        normalize = transforms.Normalize(tuple(cfg.data.mean), tuple(cfg.data.std))
    return normalize


# --- the input files -----------------------------------------------------------------------------


def collect_inputs(paths: Sequence[str], notes: list[str]) -> list[Row]:
    """One row per file to classify, in input order; paths that do not exist are rows with an
    error already. Each file once, even when a folder and an explicit name both reach it."""
    rows: list[Row] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found = walk_images(path)
            if not found:
                notes.append(f"{given}: no image files ({', '.join(IMG_EXTENSIONS)}) in it")
        elif path.exists() or path.is_symlink():
            found = [path]
        else:
            rows.append(Row(str(given), error="no such file or directory"))
            continue
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                rows.append(Row(str(file)))
    return rows


def walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders skipped, as
    training skips them."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if is_image_file(f)]
    return found


# --- classifying ---------------------------------------------------------------------------------


def classify(rows: list[Row], predictor: Predictor, batch_size: int, top_k: int) -> None:
    """Fill in every row's ``top``, ``batch_size`` images at a time, or its ``error``."""
    pending = [row for row in rows if row.error is None]
    for start in range(0, len(pending), batch_size):
        batch: list[torch.Tensor] = []
        readable: list[Row] = []
        for row in pending[start : start + batch_size]:
            try:
                batch.append(preprocess(row.path, predictor))
                readable.append(row)
            except (LabError, OSError, ValueError, RuntimeError) as err:
                row.error = str(err)  # reported on its row; the rest of the batch goes on
        if batch:
            tops = predict_top(torch.stack(batch), predictor, top_k)
            for row, top in zip(readable, tops, strict=True):
                row.top = top


def preprocess(path: str, predictor: Predictor) -> torch.Tensor:
    """The model input for one file: opened in the run's mode ("L" or "RGB", from any PIL mode)
    and transformed as in evaluation."""
    return predictor.transform(predictor.loader(path))


@torch.no_grad()
def predict_top(images: torch.Tensor, predictor: Predictor, k: int) -> list[list]:
    """The ``k`` most probable (class name, probability) pairs of each image."""
    out = predictor.model(images.to(predictor.device)).float()
    # A log-softmax head (lenet5_relu, paired with NLLLoss) already gives log-probabilities.
    probs = out.exp() if predictor.log_probs else out.softmax(dim=1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    values, indices = values.cpu(), indices.cpu()
    return [
        [(predictor.classes[i], p) for i, p in zip(idx, val, strict=True)]
        for idx, val in zip(indices.tolist(), values.tolist(), strict=True)
    ]


# --- output --------------------------------------------------------------------------------------


def header(top_k: int) -> list[str]:
    columns = ["path", "label", "probability"]
    for rank in range(2, top_k + 1):
        columns += [f"label_{rank}", f"probability_{rank}"]
    return columns


def table_lines(rows: Iterable[Row], top_k: int) -> list[str]:
    """An aligned table: one line per row; an unreadable file's line reads ``error: <reason>``."""
    names = header(top_k)
    cells = []
    for row in rows:
        if row.error is not None:
            cells.append([row.path, f"error: {row.error}"])
        else:
            cells.append([row.path] + [c for label, p in row.top for c in (label, f"{p:.4f}")])
    # An error line is [path, reason]: the reason, its last cell, must not widen the label column.
    widths = [len(n) for n in names]
    for line in cells:
        for i, cell in enumerate(line if len(line) == len(names) else line[:1]):
            widths[i] = max(widths[i], len(cell))
    # Error lines are shorter than the header, hence strict=False.
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip()
        for line in [names, *cells]
    ]


def write_csv(rows: Iterable[Row], top_k: int, path: Path) -> None:
    """CSV with a header row; an unreadable file has empty label and probability cells and its
    reason in the ``error`` column."""
    try:
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([*header(top_k), "error"])
            for row in rows:
                cells = [c for label, p in row.top for c in (label, f"{p:.6f}")]
                cells += [""] * (2 * top_k - len(cells))
                writer.writerow([row.path, *cells, row.error or ""])
    except OSError as err:
        raise LabError(f"cannot write --output {path} ({err}); choose a writable file") from None


def summary(rows: Sequence[Row]) -> str:
    bad = sum(row.error is not None for row in rows)
    return f"{len(rows) - bad} classified, {bad} unreadable"


# --- command line --------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_models.tools.predict",
        description="Classify image files with a checkpoint, preprocessed as its run's data.",
    )
    parser.add_argument("checkpoint", type=Path, help="<run dir>/checkpoints/<name>.ckpt")
    parser.add_argument("inputs", nargs="*", help="image files and folders (walked recursively)")
    parser.add_argument("--output", type=Path, help="write CSV here instead of a table")
    parser.add_argument(
        "--top-k", type=positive_int, default=1, help="classes per file (default 1)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per forward pass"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    notes: list[str] = []
    try:
        predictor = load_predictor(args.checkpoint)
        rows = collect_inputs(args.inputs, notes)
        if args.output is not None and not args.output.parent.is_dir():
            # Found out now, not after classifying a whole folder.
            raise LabError(f"cannot write --output {args.output}: no folder {args.output.parent}")
        if not rows:
            # The notes say which folders held no images; that is the whole story here.
            why = "; ".join(notes) or "give image files or folders of images after the checkpoint"
            raise LabError(f"no input files to classify: {why}")
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    top_k = min(args.top_k, len(predictor.classes))
    for note in [*predictor.notes, *notes]:
        print(f"note: {note}", file=sys.stderr)

    classify(rows, predictor, args.batch_size, top_k)
    if args.output is None:
        print("\n".join(table_lines(rows, top_k)))
        print(summary(rows))
    else:
        try:
            write_csv(rows, top_k, args.output)
        except LabError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{summary(rows)}; written to {args.output}")
    if all(row.error is not None for row in rows):
        print(
            f"error: none of the {len(rows)} files could be classified; each row says why",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
