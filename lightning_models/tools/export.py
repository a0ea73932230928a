"""Export a trained checkpoint's network to ONNX and/or TorchScript, checked against the checkpoint.

    python -m lightning_models.tools.export <run>/checkpoints/epoch_009.ckpt --onnx model.onnx
    python -m lightning_models.tools.export <run>/checkpoints/last.ckpt --torchscript model.pt

The model is loaded as ``lightning_models.tools.predict`` loads it: with the config of the run
that wrote the checkpoint (``<run dir>/.hydra/config.yaml``). ``--onnx`` needs the ``export``
extra (``pip install -e '.[export]'``: onnx, onnxscript, onnxruntime); TorchScript needs nothing
more than torch.

What the exported model takes and gives (also in the files: ONNX metadata_props, and the
TorchScript file's extra file ``lab.json``):

- input ``images``: float32, ``N x C x H x W``, pixel values in [0, 1] (what torchvision's
  ``ToTensor`` gives), in the run's channels (1 grey, 3 RGB) and size (``data.image_size``
  square), any batch size. The run's normalisation (``data.mean``, ``data.std``) is inside the
  exported model, so an image only needs resizing and scaling to [0, 1].
- output ``log_probs``: float32, ``N x classes``, log-probabilities: ``exp`` of them are the
  probabilities ``predict`` prints (a log-softmax head's outputs are kept as they are, raw logits
  go through log-softmax); the class names are in the metadata.

The check: the exported model runs (onnxruntime, ``torch.jit.load``) on the run's own test
images (the datamodule's test set, ``--check-images`` of them; random images when the run's
data cannot be opened) and its outputs are compared with the checkpoint's model in PyTorch on
the same images: the predicted classes must be equal and the log-probabilities within
``--atol``. Exit status: 0 when every export passed its check, 1 when one did not (the file is
kept, the difference printed), 2 (one sentence on stderr) when the checkpoint or an output path
cannot be used or the extra is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms import Normalize

from lightning_models.checks import LabError, check_writable
from lightning_models.tools.predict import Predictor, load_predictor, positive_int

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
INPUT, OUTPUT = "images", "log_probs"


class Exportable(nn.Module):
    """The checkpoint's net as an exported file computes it: the run's normalisation, the net,
    log-softmax unless the net's head already gives log-probabilities (module docstring)."""

    def __init__(self, net: nn.Module, normalize: Normalize, log_probs: bool) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", per_channel(normalize.mean))
        self.register_buffer("std", per_channel(normalize.std))
        self.log_probs = log_probs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.net((images - self.mean) / self.std)
        return out if self.log_probs else torch.log_softmax(out, dim=1)


def per_channel(values: Sequence[float]) -> torch.Tensor:
    """Normalisation statistics shaped to broadcast over ``N x C x H x W``."""
    return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)


@dataclass
class Check:
    """How an exported model's outputs compare with the checkpoint's on the check images."""

    images: int
    same_class: int
    max_diff: float
    atol: float

    @property
    def ok(self) -> bool:
        return self.same_class == self.images and self.max_diff <= self.atol

    def line(self, what: str, source: str) -> str:
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{what} check on {self.images} {source}: same class for {self.same_class}/"
            f"{self.images}, max |difference| of log-probabilities {self.max_diff:.2e} (allowed "
            f"{self.atol:g}): {verdict}"
        )


def exportable(predictor: Predictor) -> Exportable:
    """The exported computation of ``predictor``'s model, on the CPU, in eval mode."""
    normalize = predictor.normalize
    assert normalize is not None  # load_predictor always sets it
    net = predictor.model.net.to("cpu").eval()
    return Exportable(net, normalize, predictor.log_probs).eval()


def check_images(predictor: Predictor, count: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Up to ``count`` test images of the run, in [0, 1] as the exported model takes them, with
    the run's normalised images of the same pixels (the checkpoint model's input) and a
    description; random pixels when the run's data cannot be opened."""
    normalize = predictor.normalize
    assert normalize is not None
    mean, std = per_channel(normalize.mean), per_channel(normalize.std)
    datamodule = predictor.datamodule
    batches: list[torch.Tensor] = []
    if datamodule is not None:
        try:
            datamodule.prepare_data()
            datamodule.setup("test")
            taken = 0
            for x, _y in datamodule.test_dataloader():
                batches.append(x[: count - taken].to("cpu", torch.float32))
                taken += len(batches[-1])
                if taken >= count:
                    break
        except (LabError, OSError, RuntimeError) as err:
            predictor.notes.append(f"the run's test set cannot be read ({err})")
            batches = []
    if batches:
        normalised = torch.cat(batches)
        # The datamodule gives normalised tensors; the exported model normalises itself.
        return normalised * std + mean, normalised, "test images of the run"
    generator = torch.Generator().manual_seed(0)
    raw = torch.rand(count, *predictor.image_shape, generator=generator)
    return raw, (raw - mean) / std, "random images (the run's test set could not be read)"


@torch.no_grad()
def reference(predictor: Predictor, normalised: torch.Tensor) -> torch.Tensor:
    """The checkpoint's model in PyTorch, as predict runs it, as log-probabilities."""
    out = predictor.model.to("cpu").eval()(normalised).float()
    return out if predictor.log_probs else out.log_softmax(dim=1)


def compare(exported: torch.Tensor, expected: torch.Tensor, atol: float) -> Check:
    same = int((exported.argmax(dim=1) == expected.argmax(dim=1)).sum())
    diff = float((exported - expected).abs().max()) if len(expected) else 0.0
    return Check(len(expected), same, diff, atol)


def metadata(predictor: Predictor) -> dict[str, str]:
    """What a user of the file needs to feed it and read it (module docstring)."""
    channels, height, width = predictor.image_shape
    normalize = predictor.normalize
    assert normalize is not None
    return {
        "input": (
            f"{INPUT}: float32 N x {channels} x {height} x {width}, pixel values in [0, 1] "
            f"({'grey' if channels == 1 else 'RGB'}); normalised inside the model"
        ),
        "output": f"{OUTPUT}: float32 N x {len(predictor.classes)} log-probabilities",
        "classes": json.dumps(predictor.classes),
        "mean": json.dumps(list(map(float, normalize.mean))),
        "std": json.dumps(list(map(float, normalize.std))),
    }


# --- the two formats ------------------------------------------------------------------------


def export_onnx(model: Exportable, example: torch.Tensor, path: Path, info: dict[str, str]) -> None:
    """ONNX through torch.export (``dynamo=True``), the batch size left free, the metadata in
    the model's metadata_props."""
    import onnx

    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT],
        output_names=[OUTPUT],
        dynamic_shapes={INPUT: {0: batch}},
        dynamo=True,
        verbose=False,
    )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, info)
    onnx.save(proto, str(path))


def run_onnx(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT], {INPUT: images.numpy()})[0])


def export_torchscript(
    model: Exportable, example: torch.Tensor, path: Path, info: dict[str, str]
) -> None:
    """TorchScript by tracing (any net the lab builds traces; not every one scripts)."""
    with torch.no_grad(), _torchscript_asked_for():
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={"lab.json": json.dumps(info)})


@torch.no_grad()
def run_torchscript(path: Path, images: torch.Tensor) -> torch.Tensor:
    with _torchscript_asked_for():
        return torch.jit.load(str(path), map_location="cpu")(images)


@contextlib.contextmanager
def _torchscript_asked_for() -> Iterator[None]:
    """torch warns at each call that TorchScript is deprecated (for torch.export, which --onnx
    uses); the user chose --torchscript, for the runtimes that still load it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


# --- command line ---------------------------------------------------------------------------


def missing_packages(names: Sequence[str]) -> list[str]:
    """Those of ``names`` that cannot be imported."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def check_output(path: Path, option: str) -> None:
    """A LabError when ``path`` cannot be written: a folder, no such folder, not writable."""
    if path.is_dir():
        raise LabError(f"{option} {path} is a folder; give a file name, e.g. {path}/model")
    folder = path.parent
    if not folder.exists():
        raise LabError(f"cannot write {option} {path}: no folder {folder}")
    check_writable(folder, f"{option} {path}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_models.tools.export",
        description="Export a checkpoint's model to ONNX and/or TorchScript, checked against it.",
    )
    parser.add_argument("checkpoint", type=Path, help="<run dir>/checkpoints/<name>.ckpt")
    parser.add_argument("--onnx", type=Path, help="write an ONNX model here (needs .[export])")
    parser.add_argument("--torchscript", type=Path, help="write a TorchScript model here")
    parser.add_argument(
        "--check-images",
        type=positive_int,
        default=256,
        help="test images of the run to compare outputs on (default 256)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=1e-4,
        help="largest difference of log-probabilities allowed (default 1e-4)",
    )
    return parser.parse_args(argv)


EXPORTERS = {"onnx": (export_onnx, run_onnx), "torchscript": (export_torchscript, run_torchscript)}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    given = {"onnx": args.onnx, "torchscript": args.torchscript}
    targets = [(fmt, path) for fmt, path in given.items() if path is not None]
    try:
        if not targets:
            raise LabError("nothing to export: give --onnx FILE and/or --torchscript FILE")
        missing = missing_packages(ONNX_PACKAGES) if args.onnx is not None else []
        if missing:
            raise LabError(
                f"--onnx needs {', '.join(missing)}, not installed here; install the export "
                "extra: pip install -e '.[export]'"
            )
        for fmt, path in targets:
            check_output(path, f"--{fmt}")
        predictor = load_predictor(args.checkpoint, torch.device("cpu"))
    except LabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    model = exportable(predictor)
    images, normalised, source = check_images(predictor, args.check_images)
    for note in predictor.notes:
        print(f"note: {note}", file=sys.stderr)
    expected = reference(predictor, normalised)
    info = metadata(predictor)
    print(f"input: {info['input']}; output: {info['output']}")
    ok = True
    for fmt, path in targets:
        export, run = EXPORTERS[fmt]
        # A batch of 2, so that torch.export leaves the batch size free (1 would be fixed).
        export(model, images[:1].repeat(2, 1, 1, 1), path, info)
        check = compare(run(path, images), expected, args.atol)
        print(f"{path}: {check.line(fmt, source)}")
        ok = ok and check.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
