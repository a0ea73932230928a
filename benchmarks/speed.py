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
LABELS = {"plain": "(a) plain DataLoader loop", "memory": "(b) tensors in memory", "lab": "(c) lab"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Images/s and epoch time of the reports' plain loop, an in-memory ceiling "
        "and the lab, in one run; or the wall time a recipe needs to reach an accuracy.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="lenet5", help="a conf/model choice")
    p.add_argument("--data", default="fashion", choices=["fashion", "mnist"])
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--epochs", type=int, default=3, help="per path; the first is a warm-up")
    p.add_argument("--rounds", type=int, default=1, help="run the paths this many times in turn")
    p.add_argument("--data-dir", default=os.environ.get("LAB_DATA_DIR", "data"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--paths", default=",".join(PATHS), help="which of plain,memory,lab to run")
    p.add_argument("--limit-train-batches", type=int, default=None, help="batches per epoch")
    p.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE",
        help="Hydra override for the lab's config (repeatable), e.g. data.fast=false",
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
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.time_to_acc is not None and not args.experiment:
        p.error("--time-to-acc needs --experiment")
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


# --- shared helpers -------------------------------------------------------------------------


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


def torchvision_dataset(args: argparse.Namespace, transform=None):
    from torchvision import datasets

    cls = datasets.FashionMNIST if args.data == "fashion" else datasets.MNIST
    return cls(str(args.data_dir), train=True, transform=transform, download=False)


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
        torchvision_dataset(args, transform), batch_size=args.batch_size, shuffle=True
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

    data = torchvision_dataset(args)
    mean = torch.tensor(list(cfg.data.mean)).view(1, -1, 1, 1)
    std = torch.tensor(list(cfg.data.std)).view(1, -1, 1, 1)
    x_all = ((data.data.unsqueeze(1).float() / 255 - mean) / std).to(args.device)
    y_all = data.targets.to(args.device)
    net, optimizer, criterion = make_model(cfg, args.device, args.seed)
    net.train()
    n, batch = len(y_all), args.batch_size
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
    return result


def run_dir(output_dir: str, path: str, round_index: int) -> str:
    """Where the lab writes in round ``round_index`` (each round its own folder)."""
    return str(Path(output_dir) / (f"{path}-{round_index}" if round_index else path))


def run_isolated(path: str, argv: list[str], workdir: Path, round_index: int) -> dict[str, Any]:
    result_file = workdir / f"{path}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--only", path,
           "--result-file", str(result_file), "--round-index", str(round_index)]  # fmt: skip
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


def table(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> str:
    """``results``: per path, one result per round."""
    import lightning
    import torch

    any_result = next(iter(results.values()))[0]
    lines = [
        f"device {args.device}, {any_result['threads']} torch threads, torch {torch.__version__}, "
        f"lightning {lightning.__version__}; data={args.data} model={args.model} "
        f"batch {args.batch_size}, {args.rounds} round(s) of {args.epochs} epochs per path"
        + (f" of {args.limit_train_batches} batches" if args.limit_train_batches else "")
        + "; s/epoch: median (range) over the epochs after each process's first; images/s at "
        "the median",
        "",
        "| path | epochs | s/epoch | range | images/s | peak RSS MB | peak GPU MB | train acc "
        "| total s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rates = {}
    for path, rounds in results.items():
        s = summarise(rounds)
        rates[path] = s["img_per_s"]
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
    if "lab" in rates:
        for other, name in (("plain", "(c)/(a)"), ("memory", "(c)/(b)")):
            if other not in rates:
                continue
            line = f"{name} images/s: {rates['lab'] / rates[other]:.2f}"
            if args.rounds > 1:
                per_round = [
                    summarise([lab])["img_per_s"] / summarise([base])["img_per_s"]
                    for lab, base in zip(results["lab"], results[other], strict=True)
                ]
                line += " (rounds: " + ", ".join(f"{r:.2f}" for r in per_round) + ")"
            lines.append(line)
    if args.no_isolate:
        lines.append("(--no-isolate: peak RSS is this process's, all paths so far)")
    return "\n".join(lines)


# --- time to accuracy -----------------------------------------------------------------------


def time_to_accuracy(args: argparse.Namespace, output_dir: str) -> str:
    import torch

    import train

    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = [f"experiment={args.experiment}", "test=false", *base_overrides(args, output_dir)]
    if args.max_epochs:
        overrides.append(f"trainer.max_epochs={args.max_epochs}")
    overrides += args.override
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
        if args.only:  # a child: one path, result as JSON
            result = run_one(args.only, args, run_dir(output_dir, args.only, args.round_index))
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

        build(compose(speed_overrides(args, output_dir)).data).prepare_data()
        results: dict[str, list[dict[str, Any]]] = {path: [] for path in paths}
        for k in range(args.rounds):
            for path in paths:
                if args.no_isolate:
                    result = run_one(path, args, run_dir(output_dir, path, k))
                else:
                    result = run_isolated(path, argv, Path(tmp), k)
                results[path].append(result)
        print(table(args, results), flush=True)
    return 0


if __name__ == "__main__":
    # Run as a script: import this file as benchmarks.speed, so the Hydra targets above
    # (benchmarks.speed.make_callback) name the module that holds the callbacks' records.
    sys.path.insert(0, str(ROOT))
    from benchmarks import speed

    sys.exit(speed.main())
