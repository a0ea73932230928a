"""Training speed: the lab against the reports' plain loop and against the in-memory ceiling.

One run, one machine, the same model, data, batch size, optimizer (and seed) for three paths:

(a) ``plain``: the hand-written loop of the reports (``/work/shared/seeds/000_*.txt``):
    torchvision's dataset with ``ToTensor`` + ``Normalize``, ``DataLoader(shuffle=True)``,
    ``model.train()``, forward, ``zero_grad``, loss, ``backward``, ``step``, ``loss.item()``.
(b) ``memory``: the ceiling: the same model and optimizer on batches sliced from one normalised
    tensor already on the device (a ``randperm`` per epoch), nothing else per step.
(c) ``lab``: ``train.train(cfg)``, the code path of ``python train.py``, on the real config
    (composed with Hydra's compose API) with its default callbacks and logging, ``data.fast`` as
    given (default: as configured, ``auto``), ``data.val_size=0``, ``test=false``.

All three see the same un-augmented images (``data.augment=false``) and run no LR scheduler in
(a) and (b); the lab runs the model config's own (none for lenet5). Each path runs in a child
process of its own (``--no-isolate``: in this one), so its peak memory is its own.

    python benchmarks/speed.py                                   # FashionMNIST, lenet5, batch 100
    python benchmarks/speed.py --data mnist --epochs 5 --device cpu
    python benchmarks/speed.py --paths lab --override data.fast=false   # the lab's old loader
    python benchmarks/speed.py --rounds 3 --epochs 4          # the figures in benchmarks/README.md
    python benchmarks/speed.py --model lenet5,cifar_cnn --rounds 3 --epochs 4   # two models

``--model`` takes a comma-separated list of models; each runs on its own data set: ``--data`` is
one data set for all, or a comma list of the same length, or by default per model ``cifar10`` for
``cifar_cnn`` and ``fashion`` for any other. The rounds run every (model, path) in turn, each in
its own process; the report is one table per model with its ratios, then (several models) a table
of the ratios of all. ``--data-dir DIR`` is the folder of every data set; ``--data-dir NAME=DIR``
(repeatable) gives data set NAME (fashion, mnist, cifar10) a folder of its own.
``--override MODEL:KEY=VALUE`` applies an override to that model's runs only, e.g.
``--override cifar_cnn:optimizer=sgd_nesterov --override cifar_cnn:data.batch_size=64`` (report
003's recipe); paths (a) and (b) take their batch size, optimizer and data statistics from the
composed config, so they follow such overrides. A CIFAR-10 copy that is not byte-identical to the
original (e.g. batches made from the JPEG copy) needs ``--override data.verify_checksums=false``.

prints, per path: epochs, s/epoch (the median over the epochs after each process's first, a
warm-up, and their range), images/s over the median epoch, peak memory (RSS of the process; on a
GPU also ``torch.cuda.max_memory_allocated``), the training accuracy of the last epoch; then the
ratios of images/s (c)/(a) and (c)/(b). ``--rounds N`` runs the paths N times in turn (a, b, c,
a, b, c, ...), so that a slow spell of a shared machine falls on every path rather than on one;
the medians and ranges pool all rounds.

All three paths run with the process settings the lab makes for itself
(:func:`lightning_models.runtime.prepare_process`): no per-step GPU probe
(:func:`lightning_models.runtime.no_gpu_probe_per_step`; importing Lightning turns it on, the
reports' loops never imported it) and glibc keeping freed memory
(:func:`lightning_models.runtime.keep_freed_memory`; without it, some processes of any of the
three page-fault through every step and run 25-40% slower than others).

Time to accuracy: the wall time a recipe needs until its accuracy first reaches a threshold::

    python benchmarks/speed.py --time-to-acc 0.90 --experiment fashion_lenet5
    python benchmarks/speed.py --time-to-acc 0.9176 --experiment fashion_speedrun --acc-on test

runs ``train.train`` on the experiment and records, after every epoch, the wall time since the
fit started and ``val/acc`` (``--acc-on val``: an experiment without a validation split gets
``data.val_size=--val-size``; the validation time counts) or the test accuracy (``--acc-on
test``: the reports' figure; evaluating it is not counted). It stops at the threshold unless
``--no-stop``.

``--limit-train-batches N`` shrinks every epoch of every path to N batches (smoke tests on
generated data); ``--override KEY=VALUE`` (repeatable) passes Hydra overrides to the lab's config,
which also gives the data options (mean, std, ``data.verify_checksums``) of the other paths.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("plain", "memory", "lab")
DATA = ("fashion", "mnist", "cifar10")
# Channels and side of the images as stored: paths (a) and (b) neither resize nor make grey.
NATIVE_SHAPE = {"fashion": (1, 28), "mnist": (1, 28), "cifar10": (3, 32)}
LABELS = {"plain": "(a) plain DataLoader loop", "memory": "(b) tensors in memory", "lab": "(c) lab"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Images/s and epoch time of the reports' plain loop, an in-memory ceiling "
        "and the lab, in one run; or the wall time a recipe needs to reach an accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model", default="lenet5",
        help="a conf/model choice, or a comma-separated list of them (e.g. lenet5,cifar_cnn)",
    )  # fmt: skip
    p.add_argument(
        "--data", default=None,
        help=f"one of {', '.join(DATA)} for every model, or a comma list, one per model; "
        "when not given: cifar10 for cifar_cnn, fashion for any other model",
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3, help="per path; the first is a warm-up")
    p.add_argument("--rounds", type=int, default=1, help="run the paths this many times in turn")
    p.add_argument(
        "--data-dir", action="append", default=[], metavar="[NAME=]DIR",
        help="the folder holding the data sets in torchvision's layout (none given: $LAB_DATA_DIR, "
        "else data); NAME=DIR (repeatable) gives data set NAME its own folder. A CIFAR-10 copy "
        "that is not the original's files (e.g. made from the JPEG copy) needs --override "
        "data.verify_checksums=false",
    )  # fmt: skip
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--paths", default=",".join(PATHS), help="which of plain,memory,lab to run")
    p.add_argument("--limit-train-batches", type=int, default=None, help="batches per epoch")
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="Hydra override for the lab's config (repeatable), e.g. data.fast=false; "
        "MODEL:KEY=VALUE applies to that model's runs only, e.g. cifar_cnn:optimizer=sgd_nesterov",
    )  # fmt: skip
    p.add_argument("--no-isolate", action="store_true", help="run every path in this process")
    p.add_argument("--log-dir", default=None, help="where the lab writes (default: a temp dir)")
    ttacc = p.add_argument_group("time to accuracy")
    ttacc.add_argument("--time-to-acc", type=float, default=None, metavar="ACC")
    ttacc.add_argument("--experiment", default=None, help="a conf/experiment choice")
    ttacc.add_argument("--acc-on", default="val", choices=["val", "test"])
    ttacc.add_argument("--val-size", type=int, default=5000, help="with --acc-on val, when the "
                       "experiment has no validation split")  # fmt: skip
    ttacc.add_argument("--max-epochs", type=int, default=None, help="default: the experiment's")
    ttacc.add_argument("--no-stop", action="store_true", help="train on after the threshold")
    # internal: run one path and write its result as JSON
    p.add_argument("--only", choices=PATHS, help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    p.add_argument("--round-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--run-prefix", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not args.models:
        p.error("--model names no model")
    if args.data is None:
        args.datas = [default_data(m) for m in args.models]
    else:
        args.datas = [d.strip() for d in args.data.split(",") if d.strip()]
        if len(args.datas) == 1:
            args.datas *= len(args.models)
        if len(args.datas) != len(args.models):
            p.error(f"--data names {len(args.datas)} data sets for {len(args.models)} models")
    unknown = sorted(set(args.datas) - set(DATA))
    if unknown:
        p.error(f"--data: unknown {unknown}; use {', '.join(DATA)}")
    args.data_dirs = {None: os.environ.get("LAB_DATA_DIR", "data")}
    for value in args.data_dir:
        name, sep, folder = value.partition("=")
        if sep and name in DATA:
            args.data_dirs[name] = folder
        else:
            args.data_dirs[None] = value
    if args.time_to_acc is not None and not args.experiment:
        p.error("--time-to-acc needs --experiment")
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# --- shared helpers -------------------------------------------------------------------------


def default_data(model: str) -> str:
    return "cifar10" if model == "cifar_cnn" else "fashion"


def model_choices() -> set[str]:
    return {f.stem for f in (ROOT / "conf" / "model").glob("*.yaml")}


def overrides_for(overrides: list[str], model: str | None) -> list[str]:
    """``overrides`` without the ``MODEL:`` ones of other models, that prefix taken off."""
    models, out = model_choices(), []
    for override in overrides:
        prefix, sep, rest = override.partition(":")
        if sep and "=" not in prefix and prefix in models:
            if prefix == model:
                out.append(rest)
        else:
            out.append(override)
    return out


def data_dir_of(args: argparse.Namespace, data: str | None) -> str:
    return args.data_dirs.get(data, args.data_dirs[None])


def for_model(args: argparse.Namespace, model: str, data: str) -> argparse.Namespace:
    """``args`` for one model: ``model``, ``data``, its data folder and overrides."""
    out = argparse.Namespace(**vars(args))
    out.model, out.data, out.data_dir = model, data, data_dir_of(args, data)
    out.override = overrides_for(args.override, model)
    return out


def compose(overrides: list[str]):
    """The real ``conf/train.yaml`` with ``overrides``, as ``python train.py`` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import datamodules  # noqa: F401  (registers the resolvers the data configs use)

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = hydra_compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def base_overrides(args: argparse.Namespace, output_dir: str) -> list[str]:
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    out = [
        f"paths.data_dir={Path(args.data_dir).resolve()}",
        f"paths.output_dir={output_dir}",
        f"seed={args.seed}",
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",
    ]
    if args.limit_train_batches:
        out.append(f"trainer.limit_train_batches={args.limit_train_batches}")
    return out


def speed_overrides(args: argparse.Namespace, output_dir: str) -> list[str]:
    return [
        f"data={args.data}",
        f"model={args.model}",
        f"data.batch_size={args.batch_size}",
        f"trainer.max_epochs={args.epochs}",
        "data.val_size=0",
        "data.augment=false",
        "test=false",
        *base_overrides(args, output_dir),
        *args.override,
    ]


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_model(cfg, device: str, seed: int):
    """The lab's network, optimizer and loss for ``cfg`` (what ``model=`` builds)."""
    import torch

    from lightning_models.build import instantiate_node as build

    torch.manual_seed(seed)
    module = build(cfg.model)
    net = module.net.to(device)
    return net, module.optimizer_factory(params=net.parameters()), module.criterion


def torchvision_dataset(args: argparse.Namespace, cfg, transform=None):
    """torchvision's training set of ``args.data`` (for CIFAR-10 the lab's subclass, whose MD5
    checks follow ``data.verify_checksums``), as the files are: no resizing, no grey."""
    from torchvision import datasets

    shape = (cfg.data.get("in_channels"), cfg.data.get("image_size"))
    if shape != NATIVE_SHAPE[args.data]:
        raise SystemExit(
            f"paths plain and memory take {args.data}'s images as stored, "
            f"{NATIVE_SHAPE[args.data]} (channels, side), not {shape}: run them without "
            "data.in_channels or data.image_size overrides, or run --paths lab"
        )
    root = str(args.data_dir)
    if args.data == "cifar10":
        from datamodules.cifar10 import CIFAR10Dataset

        verify = bool(cfg.data.verify_checksums)
        return CIFAR10Dataset(root, train=True, transform=transform, verify_checksums=verify)
    cls = datasets.FashionMNIST if args.data == "fashion" else datasets.MNIST
    return cls(root, train=True, transform=transform, download=False)


# --- the three paths ------------------------------------------------------------------------


def run_plain(args: argparse.Namespace, cfg) -> dict[str, Any]:
    """(a) The reports' loop: DataLoader(shuffle) over ToTensor + Normalize, loss.item() per
    step (their running average)."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(tuple(cfg.data.mean), tuple(cfg.data.std))]
    )
    train_loader = DataLoader(
        torchvision_dataset(args, cfg, transform), batch_size=cfg.data.batch_size, shuffle=True
    )
    net, optimizer, criterion = make_model(cfg, args.device, args.seed)
    net.train()
    epochs = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        images, avg_loss = 0, 0.0
        correct = torch.zeros((), dtype=torch.int64, device=args.device)
        for i, (imgs, labels) in enumerate(train_loader):
            if args.limit_train_batches and i >= args.limit_train_batches:
                break
            imgs, labels = imgs.to(args.device), labels.to(args.device)
            prediction = net(imgs)
            optimizer.zero_grad()
            loss = criterion(prediction, labels)
            loss.backward()
            optimizer.step()
            avg_loss += loss.item()
            correct += (prediction.argmax(dim=1) == labels).sum()
            images += labels.shape[0]
        sync(args.device)
        epochs.append({"s": time.perf_counter() - started, "images": images})
    return {"epochs": epochs, "acc": correct.item() / max(images, 1)}


def run_memory(args: argparse.Namespace, cfg) -> dict[str, Any]:
    """(b) The ceiling: batches sliced from one normalised tensor on the device."""
    import torch

    from datamodules.in_memory import from_cifar, from_mnist

    to_tensors = from_cifar if args.data == "cifar10" else from_mnist
    held = to_tensors(torchvision_dataset(args, cfg))  # uint8 NCHW, as the lab holds them
    images, targets = held.images, held.labels
    mean = torch.tensor(list(cfg.data.mean)).view(1, -1, 1, 1)
    std = torch.tensor(list(cfg.data.std)).view(1, -1, 1, 1)
    x_all = ((images.float() / 255 - mean) / std).contiguous().to(args.device)
    y_all = targets.to(args.device)
    del images, held
    net, optimizer, criterion = make_model(cfg, args.device, args.seed)
    net.train()
    n, batch = len(y_all), cfg.data.batch_size
    batches = -(-n // batch)
    if args.limit_train_batches:
        batches = min(batches, args.limit_train_batches)
    epochs = []
    for _ in range(args.epochs):
        started = time.perf_counter()
        images = 0
        correct = torch.zeros((), dtype=torch.int64, device=args.device)
        order = torch.randperm(n, device=args.device)
        for k in range(batches):
            rows = order[k * batch : (k + 1) * batch]
            x, y = x_all[rows], y_all[rows]
            prediction = net(x)
            optimizer.zero_grad()
            loss = criterion(prediction, y)
            loss.backward()
            optimizer.step()
            correct += (prediction.argmax(dim=1) == y).sum()
            images += y.shape[0]
        sync(args.device)
        epochs.append({"s": time.perf_counter() - started, "images": images})
    return {"epochs": epochs, "acc": correct.item() / max(images, 1)}


def lightning_callback_classes():
    """The benchmark's callbacks (Lightning is imported only when a path needs it)."""
    import lightning as L
    import torch

    class EpochClock(L.Callback):
        """Seconds and images of every training epoch (clock synchronised with a GPU)."""

        records: list[dict[str, float]] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            self._started, self._images = time.perf_counter(), 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self._images += batch[1].shape[0]

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            s = time.perf_counter() - self._started
            EpochClock.records.append({"s": s, "images": self._images})

    class AccuracyClock(L.Callback):
        """After every epoch: wall time since the fit started and the accuracy reached (val/acc,
        or the test set's, whose evaluation is not counted); stops at ``threshold``."""

        records: list[dict[str, float]] = []

        def __init__(self, threshold: float, acc_on: str = "val", stop: bool = True):
            self.threshold, self.acc_on, self.stop = threshold, acc_on, stop
            self._test_loader = None

        def on_fit_start(self, trainer, pl_module) -> None:
            self._started, self._not_counted = time.perf_counter(), 0.0
            AccuracyClock.fit_started = self._started

        def _record(self, trainer, acc: float) -> None:
            wall = time.perf_counter() - self._started - self._not_counted
            AccuracyClock.records.append(
                {"epoch": trainer.current_epoch + 1, "wall_s": wall, "acc": acc}
            )
            if self.stop and acc >= self.threshold:
                trainer.should_stop = True

        def on_validation_end(self, trainer, pl_module) -> None:
            if self.acc_on == "val" and not trainer.sanity_checking:
                self._record(trainer, float(trainer.callback_metrics["val/acc"]))

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if self.acc_on != "test":
                return
            started = time.perf_counter()
            if self._test_loader is None:
                self._test_loader = trainer.datamodule.test_dataloader()
            correct = torch.zeros((), dtype=torch.int64, device=pl_module.device)
            seen = 0
            pl_module.eval()
            with torch.no_grad():
                for x, y in self._test_loader:
                    x, y = x.to(pl_module.device), y.to(pl_module.device)
                    correct += (pl_module(x).argmax(dim=1) == y).sum()
                    seen += y.shape[0]
            pl_module.train()
            acc = correct.item() / seen
            self._not_counted += time.perf_counter() - started
            self._record(trainer, acc)

    return EpochClock, AccuracyClock


def _add_callback(cfg, name: str, target: str, **kwargs) -> None:
    from omegaconf import open_dict

    with open_dict(cfg):
        if not cfg.get("callbacks"):
            cfg.callbacks = {}
        cfg.callbacks[name] = {"_target_": target, **kwargs}


def run_lab(args: argparse.Namespace, cfg) -> dict[str, Any]:
    """(c) ``train.train(cfg)`` with the default callbacks and logging, plus a clock."""
    import train

    EpochClock, _ = lightning_callback_classes()
    _registry["EpochClock"] = EpochClock
    EpochClock.records = []
    _add_callback(cfg, "benchmark_clock", f"{__name__}.make_callback", kind="EpochClock")
    metrics = train.train(cfg)
    return {
        "epochs": EpochClock.records,
        "acc": metrics.get("train/acc", float("nan")),
        "fast": cfg.data.get("fast"),
    }


_registry: dict[str, Any] = {}


def make_callback(kind: str, **kwargs):
    """Hydra target for the benchmark's callbacks (``_target_`` in the composed config)."""
    return _registry[kind](**kwargs)


RUNNERS = {"plain": run_plain, "memory": run_memory, "lab": run_lab}


def run_one(path: str, args: argparse.Namespace, output_dir: str) -> dict[str, Any]:
    import torch

    from lightning_models.runtime import prepare_process

    prepare_process()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = compose(speed_overrides(args, output_dir))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = RUNNERS[path](args, cfg)
    result["total_s"] = time.perf_counter() - started
    result["rss_mb"] = peak_rss_mb()
    result["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    result["threads"] = torch.get_num_threads()
    result["batch_size"] = int(cfg.data.batch_size)
    return result


def run_dir(output_dir: str, path: str, round_index: int, prefix: str = "") -> str:
    """Where the lab writes in round ``round_index`` (each round its own folder; with several
    models, under a folder per model)."""
    name = f"{path}-{round_index}" if round_index else path
    return str(Path(output_dir, prefix, name) if prefix else Path(output_dir) / name)


def run_isolated(
    path: str, argv: list[str], workdir: Path, round_index: int, model: str, data: str, prefix: str
) -> dict[str, Any]:
    result_file = workdir / f"{model}-{path}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--model", model, "--data", data,
           "--run-prefix", prefix, "--only", path, "--result-file", str(result_file),
           "--round-index", str(round_index)]  # fmt: skip
    done = subprocess.run(cmd, cwd=os.getcwd())
    if done.returncode != 0:
        raise SystemExit(f"path {path} failed (exit status {done.returncode}); see above")
    return json.loads(result_file.read_text())


# --- report ---------------------------------------------------------------------------------


def summarise(results: list[dict[str, Any]]) -> dict[str, float]:
    """One path over all its rounds: the epochs after each process's first (a warm-up)."""
    timed = [e for r in results for e in (r["epochs"][1:] if len(r["epochs"]) > 1 else r["epochs"])]
    seconds = sorted(e["s"] for e in timed)
    if not seconds:
        return {"epochs": 0, "s_per_epoch": float("nan"), "img_per_s": float("nan"),
                "s_min": float("nan"), "s_max": float("nan")}  # fmt: skip
    median = statistics.median(seconds)
    images = statistics.median(e["images"] for e in timed)
    return {
        "epochs": sum(len(r["epochs"]) for r in results),
        "s_per_epoch": median,
        "img_per_s": images / median if median else float("nan"),
        "s_min": seconds[0],
        "s_max": seconds[-1],
    }


def ratios(results: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[float, list[float]]]:
    """``(c)/(a)`` and ``(c)/(b)`` of images/s: over all rounds, and per round."""
    out: dict[str, tuple[float, list[float]]] = {}
    if "lab" not in results:
        return out
    lab = summarise(results["lab"])["img_per_s"]
    for other, name in (("plain", "(c)/(a)"), ("memory", "(c)/(b)")):
        if other not in results:
            continue
        per_round = [
            summarise([c])["img_per_s"] / summarise([base])["img_per_s"]
            for c, base in zip(results["lab"], results[other], strict=True)
        ]
        out[name] = (lab / summarise(results[other])["img_per_s"], per_round)
    return out


def table(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    """``results``: per path, one result per round (``args``: one model's)."""
    import lightning
    import torch

    any_result = next(iter(results.values()))[0]
    batch = any_result.get("batch_size", args.batch_size)
    lines = [
        f"device {args.device}, {any_result['threads']} torch threads, torch {torch.__version__}, "
        f"lightning {lightning.__version__}; data={args.data} model={args.model} "
        f"batch {batch}, {args.rounds} round(s) of {args.epochs} epochs per path"
        + (f" of {args.limit_train_batches} batches" if args.limit_train_batches else "")
        + "; s/epoch: median (range) over the epochs after each process's first; images/s at "
        "the median",
        "",
        "| path | epochs | s/epoch | range | images/s | peak RSS MB | peak GPU MB | train acc "
        "| total s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, rounds in results.items():
        s = summarise(rounds)
        last = rounds[-1]
        label = LABELS[path] + (f" (data.fast={last['fast']})" if path == "lab" else "")
        gpu_mb = [r["gpu_mb"] for r in rounds if r.get("gpu_mb") is not None]
        gpu = f"{max(gpu_mb):.0f}" if gpu_mb else "-"
        total = statistics.median(r["total_s"] for r in rounds)
        lines.append(
            f"| {label} | {s['epochs']} | {s['s_per_epoch']:.2f} | {s['s_min']:.2f}–"
            f"{s['s_max']:.2f} | {s['img_per_s']:.0f} | {max(r['rss_mb'] for r in rounds):.0f} "
            f"| {gpu} | {last['acc']:.4f} | {total:.1f} |"
        )
    lines.append("")
    for name, (ratio, per_round) in ratios(results).items():
        line = f"{name} images/s: {ratio:.2f}"
        if args.rounds > 1:
            line += " (rounds: " + ", ".join(f"{r:.2f}" for r in per_round) + ")"
        lines.append(line)
    if args.no_isolate:
        lines.append("(--no-isolate: peak RSS is this process's, all paths so far)")
    return "\n".join(lines)


def ratio_table(args: argparse.Namespace, per_model: dict[tuple[str, str], dict]) -> str:
    """Several models: their ratios side by side (per round in parentheses)."""
    lines = [
        "| model | data | batch | (c)/(a) images/s | (c)/(b) images/s |",
        "|---|---|---:|---:|---:|",
    ]
    for (model, data), results in per_model.items():
        r = ratios(results)
        cells = []
        for name in ("(c)/(a)", "(c)/(b)"):
            if name not in r:
                cells.append("-")
                continue
            ratio, per_round = r[name]
            rounds = (
                " (" + ", ".join(f"{x:.2f}" for x in per_round) + ")" if args.rounds > 1 else ""
            )
            cells.append(f"{ratio:.2f}{rounds}")
        batch = next(iter(results.values()))[0].get("batch_size", args.batch_size)
        lines.append(f"| {model} | {data} | {batch} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


# --- time to accuracy -----------------------------------------------------------------------


def time_to_accuracy(args: argparse.Namespace, output_dir: str) -> str:
    import torch

    import train

    if args.threads:
        torch.set_num_threads(args.threads)
    args = argparse.Namespace(**vars(args))
    args.data_dir = data_dir_of(args, None)
    extra = [f"trainer.max_epochs={args.max_epochs}"] if args.max_epochs else []
    extra += overrides_for(args.override, None)

    def make_overrides() -> list[str]:
        return [f"experiment={args.experiment}", "test=false", *base_overrides(args, output_dir)]

    overrides = make_overrides() + extra
    cfg = compose(overrides)
    data_choice = cfg.hydra.runtime.choices.get("data")
    if data_choice in args.data_dirs:  # a folder given for the experiment's data set
        args.data_dir = args.data_dirs[data_choice]
        overrides = make_overrides() + extra
        cfg = compose(overrides)
    notes = []
    if args.acc_on == "val" and not cfg.data.val_size:
        overrides.append(f"data.val_size={args.val_size}")
        cfg = compose(overrides)
        notes.append(f"the experiment has no validation split: data.val_size={args.val_size}")
    _, AccuracyClock = lightning_callback_classes()
    _registry["AccuracyClock"] = AccuracyClock
    AccuracyClock.records = []
    _add_callback(
        cfg,
        "benchmark_accuracy_clock",
        f"{__name__}.make_callback",
        kind="AccuracyClock",
        threshold=args.time_to_acc,
        acc_on=args.acc_on,
        stop=not args.no_stop,
    )
    called = time.perf_counter()
    train.train(cfg)
    setup_s = getattr(AccuracyClock, "fit_started", called) - called
    metric = "val/acc" if args.acc_on == "val" else "test acc"
    lines = [
        f"experiment={args.experiment} on {args.device} ({torch.get_num_threads()} torch threads),"
        f" data.fast={cfg.data.get('fast')}, threshold {metric} >= {args.time_to_acc}"
        + (f"; {'; '.join(notes)}" if notes else ""),
        "",
        f"| epoch | wall s | {metric} |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {r['epoch']} | {r['wall_s']:.1f} | {r['acc']:.4f} |" for r in AccuracyClock.records
    ]
    reached = [r for r in AccuracyClock.records if r["acc"] >= args.time_to_acc]
    lines.append("")
    if reached:
        r = reached[0]
        lines.append(
            f"reached {metric} {r['acc']:.4f} >= {args.time_to_acc} at epoch {r['epoch']} "
            f"after {r['wall_s']:.1f} s"
        )
    else:
        best = max(AccuracyClock.records, key=lambda r: r["acc"], default=None)
        lines.append(
            f"not reached in {len(AccuracyClock.records)} epochs"
            + (f"; best {best['acc']:.4f} at epoch {best['epoch']}" if best else "")
        )
    lines.append(
        f"wall s counts from the start of fitting; reading the data and building the model and "
        f"trainer took {setup_s:.1f} s before it"
        + ("; the test evaluations are left out" if args.acc_on == "test" else "")
    )
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lab-speed-") as tmp:
        output_dir = str(Path(args.log_dir).resolve() if args.log_dir else Path(tmp))
        if args.only:  # a child: one model, one path, result as JSON
            if len(args.models) != 1:
                raise SystemExit("--only runs one model")
            margs = for_model(args, args.models[0], args.datas[0])
            where = run_dir(output_dir, args.only, args.round_index, args.run_prefix)
            result = run_one(args.only, margs, where)
            Path(args.result_file).write_text(json.dumps(result))
            return 0
        if args.time_to_acc is not None:
            print(time_to_accuracy(args, output_dir), flush=True)
            return 0
        paths = [p.strip() for p in args.paths.split(",") if p.strip()]
        unknown = set(paths) - set(PATHS)
        if unknown:
            raise SystemExit(f"--paths: unknown {sorted(unknown)}; use {', '.join(PATHS)}")
        # Find, unpack (FashionMNIST from Debian's package) and check the files once, as the lab
        # does; the plain paths then read them with torchvision alone.
        from lightning_models.build import instantiate_node as build

        runs = {(m, d): for_model(args, m, d) for m, d in zip(args.models, args.datas, strict=True)}
        if len(runs) != len(args.models):
            raise SystemExit("--model: a model named twice with the same data")
        for margs in runs.values():
            build(compose(speed_overrides(margs, output_dir)).data).prepare_data()
        per_model: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {
            key: {path: [] for path in paths} for key in runs
        }
        for k in range(args.rounds):
            for (model, data), margs in runs.items():
                prefix = f"{model}-{data}" if len(runs) > 1 else ""
                for path in paths:
                    if args.no_isolate:
                        result = run_one(path, margs, run_dir(output_dir, path, k, prefix))
                    else:
                        result = run_isolated(path, argv, Path(tmp), k, model, data, prefix)
                    per_model[model, data][path].append(result)
        tables = [table(runs[key], results) for key, results in per_model.items()]
        if len(runs) > 1:
            tables.append(ratio_table(args, per_model))
        print("\n\n".join(tables), flush=True)
    return 0


if __name__ == "__main__":
    # Run as a script: import this file as benchmarks.speed, so the Hydra targets above
    # (benchmarks.speed.make_callback) name the module that holds the callbacks' records.
    sys.path.insert(0, str(ROOT))
    from benchmarks import speed

    sys.exit(speed.main())
