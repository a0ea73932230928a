"""Reproduce the five course reports: run every row of their tables, then write REPRODUCTION.md.

    python -m lightning_models.tools.reproduce   # every report, full recipes
    python -m lightning_models.tools.reproduce --report 000 004 --seeds 3
    python -m lightning_models.tools.reproduce --quick --report 000   # shortened, for a smoke test
    python -m lightning_models.tools.reproduce --report 003 --cifar10-jpeg cifar10-jpeg.tar.gz
    python -m lightning_models.tools.reproduce --launcher joblib -- torch_threads=1
    python -m lightning_models.tools.reproduce --write-only   # the document from the results

What the reports measured is listed in ``reproduction/reports/<report>.yaml``: one entry per table
of a report (a *sweep*), each row with the report's figure and the overrides of ``train.py`` that
make it. Each row runs as a Hydra multirun of ``train.py`` over its seeds (a one-key sweep runs as
one multirun over its values and seeds), in a fixed folder under ``--runs`` with
``existing_run=continue``, so running the same command again skips the jobs that finished and
resumes the ones that were killed from their own ``last.ckpt``.

A finished job leaves a *result* (``reproduction/results/<report>/<sweep>/<row>-seed<k>.json``:
its overrides, final metrics, seconds per epoch and the loss curves, read from its metrics.json
and TensorBoard events); results are small and kept in git, so the document can be written again
(``--write-only``) and a suite continued on another machine. REPRODUCTION.md and its figures
(``reproduction/figures/``) are written from the results alone.

``--quick`` runs the same rows shortened (one epoch of a few batches, one seed) into a separate
folder and marks every row of its document as shortened; it checks the whole path end to end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from lightning_models.tools import plots

log = logging.getLogger("reproduce")

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ("000", "001", "002", "003", "004")
QUICK = ("trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_test_batches=5")
# Every job of the suite: no progress bar in the logs; continue what a folder already holds.
SUITE = ("existing_run=continue", "trainer.enable_progress_bar=false")
CIFAR_JPEG_LABEL = "CIFAR-10 (JPEG q75)"
CURVES = ("train/loss", "val/loss", "test_curve/loss")
AGREES = 0.5  # points: a measured mean this close to the report's figure agrees with it
SPREAD = 2.0  # a report's single run this many seed stds from the mean is within the spread


class ReproduceError(Exception):
    """A problem the user can fix, printed as one sentence."""


# ---------------------------------------------------------------- the reports' rows


@dataclass
class Row:
    """One figure of a report: the values of its sweep's keys, and what the report gave."""

    sweep: Sweep
    values: list[Any]
    reported: float | str | None
    seeds: int
    setting: str
    note: str = ""
    images: bool = False  # keep seed 0's grids of correct and misclassified test images
    printed: float | None = None  # what the report's own log printed, where it differs

    @property
    def id(self) -> str:
        if not self.sweep.keys:
            return "run"
        pairs = zip(self.sweep.keys, self.values, strict=True)
        text = "_".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in pairs)
        return re.sub(r"[^A-Za-z0-9_.=-]", "-", text)

    @property
    def overrides(self) -> list[str]:
        return [f"{k}={v}" for k, v in zip(self.sweep.keys, self.values, strict=True)]

    def value_of(self, key: str) -> Any:
        return self.values[self.sweep.keys.index(key)] if key in self.sweep.keys else None


@dataclass
class Sweep:
    """One table of a report: an experiment, the keys its rows set, and the rows."""

    report: Report
    id: str
    experiment: str
    title: str
    keys: list[str]
    overrides: list[str]
    x: str | None  # the key a figure puts on its x axis
    data: str
    available: bool
    note: str
    metric: str  # the result's figure the table compares: test_acc, or val_acc (report 003)
    rows: list[Row] = field(default_factory=list)

    def command(self, row: Row | None = None) -> str:
        """The command a user types for one row (or the whole sweep) on the original data."""
        parts = ["python train.py"]
        rows = [row] if row is not None else self.rows
        multi = row is None and len(rows) > 1 or any(r.seeds > 1 for r in rows)
        if multi:
            parts.append("-m")
        if "experiment" not in self.keys:  # else a row's own value names it
            parts.append(f"experiment={self.experiment}")
        parts += self.overrides
        if row is not None:
            parts += row.overrides
        elif self.keys and len(self.keys) == 1:
            parts.append(f"{self.keys[0]}={','.join(str(r.values[0]) for r in rows)}")
        seeds = max(r.seeds for r in rows)
        if seeds > 1:
            parts.append("seed=" + ",".join(str(s) for s in range(seeds)))
        return " ".join(parts)


@dataclass
class Report:
    number: str
    title: str
    source: str
    intro: str
    sweeps: list[Sweep] = field(default_factory=list)


def load_reports(folder: Path, numbers: Sequence[str]) -> list[Report]:
    reports = []
    for number in numbers:
        path = folder / f"{number}.yaml"
        if not path.is_file():
            raise ReproduceError(f"report {number} has no rows file {path}; reports: {REPORTS}")
        spec = yaml.safe_load(path.read_text())
        report = Report(number, spec["title"], spec.get("source", ""), spec.get("intro", ""))
        for s in spec["sweeps"]:
            keys = list(s.get("keys", []))
            sweep = Sweep(
                report=report,
                id=s["id"],
                experiment=s["experiment"],
                title=s["title"],
                keys=keys,
                overrides=list(s.get("overrides", [])),
                x=s.get("x", keys[0] if keys else None),
                data=s.get("data", spec.get("data", "")),
                available=s.get("available", True),
                note=s.get("note", ""),
                metric=s.get("metric", "test_acc"),
            )
            if sweep.metric not in ("test_acc", "val_acc"):
                raise ReproduceError(f"{path}: sweep {sweep.id} metric must be test_acc or val_acc")
            for r in s["rows"]:
                values = list(r.get("values", []))
                if len(values) != len(keys):
                    raise ReproduceError(
                        f"{path}: sweep {sweep.id} row {values} gives {len(values)} values for "
                        f"its {len(keys)} keys {keys}"
                    )
                sweep.rows.append(
                    Row(
                        sweep=sweep,
                        values=values,
                        reported=r.get("reported"),
                        seeds=int(r.get("seeds", s.get("seeds", spec.get("seeds", 3)))),
                        setting=r.get("setting", ", ".join(map(str, values)) or sweep.title),
                        note=r.get("note", ""),
                        images=bool(r.get("images", False)),
                        printed=r.get("printed"),
                    )
                )
            report.sweeps.append(sweep)
        reports.append(report)
    return reports


# ---------------------------------------------------------------- results


def result_path(results: Path, row: Row, seed: int) -> Path:
    return results / row.sweep.report.number / row.sweep.id / f"{row.id}-seed{seed}.json"


def read_result(results: Path, row: Row, seed: int) -> dict[str, Any] | None:
    try:
        return json.loads(result_path(results, row, seed).read_text())
    except (OSError, ValueError):
        return None


IMAGES = ("test/correct", "test/misclassified")


def read_events(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[str, bytes]]:
    """A run's TensorBoard events: every scalar by tag as (step, value) in step order, and the
    last PNG of each image tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run_dir / "tensorboard"
    if not folder.is_dir():
        return {}, {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 1})
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        points = {e.step: e.value for e in events.Scalars(tag)}  # a resumed step: the last
        scalars[tag] = sorted(points.items())
    images = {tag: events.Images(tag)[-1].encoded_image_string for tag in events.Tags()["images"]}
    return scalars, images


def image_path(result: Path, tag: str) -> Path:
    return result.with_name(f"{result.stem}-{tag.rsplit('/', 1)[-1]}.png")


def make_result(
    job_dir: Path, row: Row, seed: int, quick: bool, jpeg: bool, results: Path
) -> dict[str, Any] | None:
    """The result of a finished job, read from its folder; None when it has not finished."""
    try:
        metrics = json.loads((job_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if metrics.get("status") not in ("ok", "diverged"):
        return None
    scalars, images = read_events(job_dir)
    if row.images and seed == 0:
        for tag in IMAGES:
            if tag in images:
                path = image_path(result_path(results, row, seed), tag)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(images[tag])
    epoch_s = [v for _, v in scalars.get("time/epoch_s", [])]
    return {
        "report": row.sweep.report.number,
        "sweep": row.sweep.id,
        "row": row.id,
        "seed": seed,
        "experiment": row.sweep.experiment,
        "overrides": [*row.sweep.overrides, *row.overrides],
        "quick": quick,
        "data": row.sweep.data,
        "cifar10_jpeg": jpeg,
        "status": metrics["status"],
        "test_acc": metrics.get("test/acc"),
        "val_acc": metrics.get("val/acc"),
        "test_loss": metrics.get("test/loss"),
        "epochs": metrics.get("epochs"),
        "wall_s": metrics.get("time/total_s"),
        "s_per_epoch": statistics.median(epoch_s) if epoch_s else None,
        "curves": {tag: [v for _, v in scalars[tag]] for tag in CURVES if tag in scalars},
    }


# ---------------------------------------------------------------- running


@dataclass
class Settings:
    runs: Path
    results: Path
    quick: bool
    seeds: int | None
    launcher: str | None
    extra: list[str]
    data_dir: Path | None
    cifar_dir: Path | None  # CIFAR-10 batches made from the JPEG copy, when given


def seeds_of(row: Row, settings: Settings) -> int:
    if settings.seeds is not None:
        return settings.seeds
    return 1 if settings.quick else row.seeds


def data_overrides(sweep: Sweep, settings: Settings) -> list[str]:
    if sweep.data == "cifar10" and settings.cifar_dir is not None:
        return [
            f"paths.data_dir={settings.cifar_dir}",
            "data.verify_checksums=false",
            "data.download=false",
        ]
    return [f"paths.data_dir={settings.data_dir}"] if settings.data_dir is not None else []


def data_label(sweep: Sweep, jpeg: bool) -> str:
    names = {"fashion": "FashionMNIST", "mnist": "MNIST", "scenes": "scene images (report 001)"}
    if sweep.data == "cifar10":
        return CIFAR_JPEG_LABEL if jpeg else "CIFAR-10"
    return names.get(sweep.data, sweep.data)


def multiruns(sweep: Sweep, settings: Settings) -> list[tuple[list[Row], int]]:
    """How a sweep is launched: a one-key sweep as one multirun per seed count over its values,
    any other as one multirun per row; each with its rows and number of seeds."""
    groups: dict[int, list[Row]] = {}
    if len(sweep.keys) == 1:
        for row in sweep.rows:
            groups.setdefault(seeds_of(row, settings), []).append(row)
        return [(rows, seeds) for seeds, rows in groups.items()]
    return [([row], seeds_of(row, settings)) for row in sweep.rows]


def pending(rows: list[Row], seeds: int, settings: Settings) -> list[tuple[Row, int]]:
    return [
        (row, s)
        for row in rows
        for s in range(seeds)
        if read_result(settings.results, row, s) is None
    ]


def multirun_folder(rows: list[Row], settings: Settings) -> Path:
    sweep = rows[0].sweep
    folder = settings.runs / sweep.report.number / sweep.id
    return folder if len(sweep.keys) == 1 else folder / rows[0].id


def collect(rows: list[Row], folder: Path, settings: Settings) -> None:
    """Results of the finished jobs of a multirun folder. Which row and seed a job ran is read
    from its own ``.hydra/overrides.yaml`` (Hydra numbers jobs in an order of its own)."""
    sweep = rows[0].sweep
    jobs = [p for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    for job in jobs:
        try:
            saved = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        given = dict(str(o).split("=", 1) for o in saved if "=" in str(o))
        row = next((r for r in rows if _same_row(r, given)), None)
        if row is None or "seed" not in given:
            continue
        seed = int(given["seed"])
        if read_result(settings.results, row, seed) is not None:
            continue  # a finished job's result is kept as it was taken
        jpeg = sweep.data == "cifar10" and settings.cifar_dir is not None
        result = make_result(job, row, seed, settings.quick, jpeg, settings.results)
        if result is not None:
            path = result_path(settings.results, row, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")


def _same_row(row: Row, given: dict[str, str]) -> bool:
    for key, value in zip(row.sweep.keys, row.values, strict=True):
        if key not in given:
            return False
        if given[key] != str(value):
            try:
                if float(given[key]) != float(value):
                    return False
            except ValueError:
                return False
    return True


def hydra_quoted(value: str) -> str:
    """``value`` as a quoted string of Hydra's override grammar: a folder named after its row
    (``batch_size=64_lr=1e-1``) holds ``=``, which an unquoted override value cannot."""
    return "'" + value.replace("'", "\\'") + "'"


def multirun_command(rows: list[Row], seeds: int, settings: Settings, folder: Path) -> list[str]:
    """The ``train.py -m`` command line of ``rows`` over ``seeds`` seeds, into ``folder``."""
    sweep = rows[0].sweep
    args = [f"seed={','.join(str(s) for s in range(seeds))}"]
    if len(sweep.keys) == 1:
        args.append(f"{sweep.keys[0]}={','.join(str(r.values[0]) for r in rows)}")
    else:
        args += rows[0].overrides
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *([] if "experiment" in sweep.keys else [f"experiment={sweep.experiment}"]),
        *sweep.overrides,
        *args,
        *data_overrides(sweep, settings),
        *SUITE,
        *(QUICK if settings.quick else ()),
        f"hydra.sweep.dir={hydra_quoted(str(folder))}",
        "hydra.sweeper.params={}",  # the experiment's own sweep is replaced by these rows
        *([f"hydra/launcher={settings.launcher}"] if settings.launcher else []),
        *settings.extra,
    ]


def run_multirun(rows: list[Row], seeds: int, settings: Settings) -> int:
    """Launch one multirun of train.py for ``rows`` over ``seeds`` seeds; collect its results."""
    folder = multirun_folder(rows, settings)
    command = multirun_command(rows, seeds, settings, folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "reproduce.log", "a") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        code = subprocess.call(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    collect(rows, folder, settings)
    return code


_EPOCHS: dict[tuple[str, ...], int] = {}


def planned_epochs(row: Row) -> int:
    """The row's trainer.max_epochs, from its composed config (cached)."""
    overrides = [f"experiment={row.sweep.experiment}", *row.sweep.overrides, *row.overrides]
    key = tuple(overrides)
    if key not in _EPOCHS:
        from hydra import compose, initialize_config_dir
        from hydra.core.global_hydra import GlobalHydra

        import datamodules  # noqa: F401  (the resolvers the data configs use)

        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose(config_name="train", overrides=overrides)
        _EPOCHS[key] = int(cfg.trainer.max_epochs)
        GlobalHydra.instance().clear()
    return _EPOCHS[key]


def seconds_per_epoch(row: Row, results: Path) -> float | None:
    """Wall seconds per epoch measured so far in the row itself, else its sweep, else its report
    (the median over runs; None before any of them finished): what estimates use."""
    report = [r for sweep in row.sweep.report.sweeps for r in sweep.rows]
    for scope in ([row], row.sweep.rows, report):
        known = [
            r
            for other in scope
            for s in range(max(other.seeds, 10))
            if (r := read_result(results, other, s)) and r.get("wall_s")
        ]
        if known:
            return statistics.median(r["wall_s"] / max(1, r["epochs"] or 1) for r in known)
    return None


def estimate_s(row: Row, seeds: int, settings: Settings) -> float | None:
    """Estimated seconds for a row's pending jobs (None when nothing comparable was timed)."""
    todo = sum(1 for s in range(seeds) if read_result(settings.results, row, s) is None)
    if not todo:
        return 0.0
    per_epoch = seconds_per_epoch(row, settings.results)
    if per_epoch is None:
        return None
    epochs = 1 if settings.quick else planned_epochs(row)
    return todo * per_epoch * epochs


def run_suite(reports: list[Report], settings: Settings) -> None:
    plan = [
        (rows, seeds)
        for report in reports
        for sweep in report.sweeps
        if sweep.available
        for rows, seeds in multiruns(sweep, settings)
    ]
    started = time.monotonic()
    for i, (rows, seeds) in enumerate(plan, start=1):
        collect(rows, multirun_folder(rows, settings), settings)  # e.g. results deleted
        todo = pending(rows, seeds, settings)
        sweep = rows[0].sweep
        name = f"{sweep.report.number}/{sweep.id}" + (
            f"/{rows[0].id}" if len(sweep.keys) > 1 else ""
        )
        if not todo:
            print(f"[{i}/{len(plan)}] {name}: done", flush=True)
            continue
        left = [
            estimate_s(r, seeds_of(r, settings), settings)
            for rows_, _ in plan[i - 1 :]
            for r in rows_
        ]
        known = [s for s in left if s is not None]
        eta = f"{sum(known) / 60:.0f} min" + (
            f" + {len(left) - len(known)} rows not yet timed" if len(known) < len(left) else ""
        )
        print(
            f"[{i}/{len(plan)}] {name}: {len(todo)} job(s) to run; "
            f"{(time.monotonic() - started) / 60:.1f} min so far, left (estimate): {eta}",
            flush=True,
        )
        if sweep.data == "cifar10" and settings.cifar_dir is None and not settings.data_dir:
            log.warning("CIFAR-10 rows read data/cifar-10-batches-py (or download it)")
        code = run_multirun(rows, seeds, settings)
        still = pending(rows, seeds, settings)
        if still:
            print(
                f"    {len(still)} job(s) did not finish (exit {code}); see "
                f"{settings.runs / sweep.report.number / sweep.id}/reproduce.log",
                flush=True,
            )


def prepare_cifar(source: Path, work: Path) -> Path:
    """CIFAR-10 batches made from the JPEG copy (a folder or its .tar.gz), under ``work``."""
    from datamodules.cifar10 import write_batches_from_folder

    if not source.exists():
        raise ReproduceError(f"--cifar10-jpeg {source} does not exist")
    folder = source
    if source.is_file():
        folder = work / "cifar10-jpeg"
        if not (folder / "test").is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            with tarfile.open(source) as tar:
                tar.extractall(folder, filter="data")
    out = work / "cifar10-jpeg-batches"
    print(f"CIFAR-10 (JPEG q75): {folder} as CIFAR-10 batches in {out}", flush=True)
    write_batches_from_folder(folder, out)
    return out


# ---------------------------------------------------------------- the document


@dataclass
class Measured:
    accs: list[float]
    results: list[dict[str, Any]]

    @property
    def n(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float:
        return statistics.mean(self.accs)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accs) if self.n > 1 else 0.0


def measured(row: Row, results: Path) -> Measured:
    found = []
    for s in range(max(row.seeds, 10)):
        r = read_result(results, row, s)
        if r is not None and r.get(row.sweep.metric) is not None:
            found.append(r)
    return Measured([100 * r[row.sweep.metric] for r in found], found)


def fmt_reported(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, int | float) else str(value)


def fmt_measured(m: Measured, row: Row | None = None, results: Path | None = None) -> str:
    if not m.n:
        if row is None or results is None or not row.sweep.available:
            return "not run yet"
        per_epoch = seconds_per_epoch(row, results)
        epochs = planned_epochs(row)
        if per_epoch is None:
            return f"not run yet ({epochs} epochs x {row.seeds} seeds)"
        cost = fmt_seconds(per_epoch * epochs * row.seeds)
        return f"not run yet (estimate: {epochs} epochs x {row.seeds} seeds, about {cost})"
    diverged = sum(r["status"] == "diverged" for r in m.results)
    text = f"{m.mean:.2f}" if m.n == 1 else f"{m.mean:.2f} ± {m.std:.2f}"
    text += f" (n={m.n}" + (f": {', '.join(f'{a:.2f}' for a in m.accs)}" if m.n > 1 else "") + ")"
    return text + (f", {diverged} diverged" if diverged else "")


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def row_line(row: Row, m: Measured, results: Path) -> str:
    epochs = sorted({r["epochs"] for r in m.results if r.get("epochs") is not None})
    spe = [r["s_per_epoch"] for r in m.results if r.get("s_per_epoch")]
    wall = [r["wall_s"] for r in m.results if r.get("wall_s")]
    quick = any(r.get("quick") for r in m.results)
    cells = [
        row.setting + (" **(shortened: --quick)**" if quick else ""),
        fmt_reported(row.reported),
        fmt_measured(m, row, results),
        "/".join(map(str, epochs)) or "—",
        f"{statistics.median(spe):.2f}" if spe else "—",
        fmt_seconds(statistics.mean(wall) if wall else None),
        f"`{row.sweep.command(row)}`" if row.sweep.available else "see above",
    ]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def gap(row: Row, m: Measured) -> tuple[str, bool] | None:
    """What the measured mean's distance from the reported figure says, where it is over
    :data:`AGREES` points from it, and whether the seeds' spread explains it (the report's figure
    is one run). A figure the report's own log printed differently is measured against both
    (agreeing with either is agreement)."""
    if (
        not isinstance(row.reported, int | float)
        or not m.n
        or any(r.get("quick") for r in m.results)
    ):
        return None
    figures = [(row.reported, "the report")]
    if row.printed is not None:
        figures.append((row.printed, "its printed log"))
    if any(abs(m.mean - figure) <= AGREES for figure, _ in figures):
        return None
    if m.n == 1:
        off = m.mean - row.reported
        side = "over" if off > 0 else "under"
        return f"{abs(off):.2f} points {side} the report; one seed here.", False
    parts, explained = [], False
    for figure, source in figures:
        off = m.mean - figure
        z = abs(off) / m.std if m.std > 0 else math.inf
        explained = explained or z <= SPREAD
        within = "within" if z <= SPREAD else "beyond"
        # seeds that agree to a few thousandths make z huge (inf when they are equal): say so
        distance = f"{z:.1f} std of the seeds" if z < 100 else "over 100 std of the seeds"
        parts.append(
            f"{abs(off):.2f} points {'over' if off > 0 else 'under'} {source} ({figure:g}), "
            f"{distance}: {within} their spread"
        )
    spread = f"its {m.n} seeds here span {min(m.accs):.2f}-{max(m.accs):.2f}, std {m.std:.2f}"
    return f"{'; '.join(parts)} ({spread}).", explained


def ordering(sweep: Sweep, results: Path) -> str | None:
    """Whether the value the report found best is best here too."""
    pairs = [
        (row, measured(row, results)) for row in sweep.rows if isinstance(row.reported, int | float)
    ]
    pairs = [(row, m) for row, m in pairs if m.n]
    if len(pairs) < 2:
        return None
    best_reported = max(pairs, key=lambda p: p[0].reported)[0]
    best_measured = max(pairs, key=lambda p: p[1].mean)[0]
    worst_reported = min(pairs, key=lambda p: p[0].reported)[0]
    worst_measured = min(pairs, key=lambda p: p[1].mean)[0]
    best = "holds" if best_reported is best_measured else "does not hold"
    worst = "holds" if worst_reported is worst_measured else "does not hold"
    return (
        f"Ordering over {len(pairs)} measured rows: the report's best ({best_reported.setting}) "
        f"is best here: {best} (measured best: {best_measured.setting}); its worst "
        f"({worst_reported.setting}) is worst here: {worst} (measured worst: "
        f"{worst_measured.setting})."
    )


def plot_sweep(sweep: Sweep, results: Path, figures: Path) -> list[Path]:
    """accuracy.png (reported and measured test accuracy against the swept value) and
    curves.png (training, and validation where there is one, loss per epoch, seed 0)."""
    plt = plots.pyplot()
    made = []
    rows = [(row, measured(row, results)) for row in sweep.rows]
    if len(rows) >= 2 and any(m.n for _, m in rows):
        series: dict[str, list[tuple[Row, Measured]]] = {}
        for row, m in rows:
            others = [
                f"{k.rsplit('.', 1)[-1]} {v}"
                for k, v in zip(sweep.keys, row.values, strict=True)
                if k != sweep.x
            ]
            series.setdefault(", ".join(others), []).append((row, m))
        labels = list(
            dict.fromkeys(str(r.value_of(sweep.x)) if sweep.x else r.setting for r, _ in rows)
        )
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for k, (name, members) in enumerate(series.items()):
            color = f"C{k % 10}"
            xs = [
                labels.index(str(r.value_of(sweep.x)) if sweep.x else r.setting) for r, _ in members
            ]
            rep = [
                (x, r.reported)
                for x, (r, _) in zip(xs, members, strict=True)
                if isinstance(r.reported, int | float)
            ]
            if rep:
                ax.plot(
                    *zip(*rep, strict=True),
                    "o--",
                    color=color,
                    mfc="none",
                    label=f"reported {name}".strip(),
                )
            meas = [(x, m.mean, m.std) for x, (_, m) in zip(xs, members, strict=True) if m.n]
            if meas:
                x, y, e = zip(*meas, strict=True)
                plots.mean_std_line(ax, x, y, e, f"measured {name}".strip(), color)
        ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 6 else 0)
        stage = "validation" if sweep.metric == "val_acc" else "test"
        made.append(
            _save(fig, ax, sweep, figures, "accuracy", sweep.x or "row", f"{stage} accuracy (%)")
        )
    curves = [
        (row, r) for row, m in rows for r in m.results[:1] if r.get("curves", {}).get("train/loss")
    ]
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for k, (row, r) in enumerate(curves[:12]):
            color = f"C{k % 10}"
            train = r["curves"]["train/loss"]
            ax.plot(range(1, len(train) + 1), train, "-", color=color, label=f"{row.setting} train")
            for tag, style, name in (("val/loss", ":", "val"), ("test_curve/loss", "--", "test")):
                points = r["curves"].get(tag)
                if points:
                    ax.plot(range(1, len(points) + 1), points, style, color=color,
                            label=f"{row.setting} {name}")  # fmt: skip
        made.append(_save(fig, ax, sweep, figures, "curves", "epoch", "mean loss (seed 0)"))
    return made


def _save(fig, ax, sweep: Sweep, figures: Path, kind: str, xlabel: str, ylabel: str) -> Path:
    plots.label_axes(ax, xlabel, ylabel, f"report {sweep.report.number}: {sweep.title}")
    path = figures / f"{sweep.report.number}_{sweep.id}_{kind}.png"
    plots.save(fig, path)
    return path


def write_document(
    reports: list[Report], results: Path, out: Path, jpeg: bool, quick: bool
) -> Path:
    """REPRODUCTION.md at ``out`` (and its figures beside it) from the results alone."""
    figures = out.parent / "reproduction" / "figures" if not quick else out.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    total_s, jobs, rows_done, rows_all = 0.0, 0, 0, 0
    body: list[str] = []
    beyond: list[str] = []  # rows whose gap the seeds' spread does not explain
    for report in reports:
        body += ["", f"## Report {report.number}: {report.title}", ""]
        if report.intro:
            body += [report.intro.strip(), ""]
        for sweep in report.sweeps:
            body += [f"### {sweep.title}", ""]
            if not sweep.available:
                body += [f"Not run here: {sweep.note.strip()}", ""]
            else:
                body += [
                    f"Data: {data_label(sweep, jpeg=jpeg)}. Experiment `{sweep.experiment}`.",
                    "",
                ]
                if sweep.note:
                    body += [sweep.note.strip(), ""]
            stage = "val" if sweep.metric == "val_acc" else "test"
            body += [
                f"| setting | reported | measured ({stage} acc %, mean ± std) | epochs | s/epoch "
                "| wall time per run | command |",
                "|---|---:|---|---:|---:|---:|---|",
            ]
            notes = []
            for row in sweep.rows:
                m = measured(row, results)
                rows_all += 1
                rows_done += bool(m.n)
                jobs += m.n
                total_s += sum(r.get("wall_s") or 0 for r in m.results)
                body.append(row_line(row, m, results))
                off = gap(row, m)
                said = " ".join(t for t in (row.note.strip(), off and off[0]) if t)
                if said:
                    notes.append(f"- {row.setting}: {said}")
                if off and not off[1] and m.n > 1:
                    beyond.append(f"{report.number} {sweep.id}: {row.setting}")
            if notes:
                body += ["", *notes]
            order = ordering(sweep, results) if sweep.available else None
            if order:
                body += ["", order]
            for path in plot_sweep(sweep, results, figures) if sweep.available else []:
                body += ["", f"![{path.stem}]({_link(path, out)})"]
            for row in [r for r in sweep.rows if r.images]:
                for tag in IMAGES:
                    path = image_path(result_path(results, row, 0), tag)
                    if path.is_file():
                        what = (
                            "10 random correctly classified"
                            if tag.endswith("correct")
                            else "all misclassified"
                        )
                        body += [
                            "",
                            f"{row.setting}, seed 0: {what} test images",
                            "",
                            f"![{path.stem}]({_link(path, out)})",
                        ]
            body.append("")
    cifar = (
        f"on {CIFAR_JPEG_LABEL}: all 60,000 CIFAR-10 images re-encoded as JPEG at quality 75, "
        "converted to CIFAR-10's batch files (`--cifar10-jpeg`); the command shown is the one "
        "for the original files"
        if jpeg
        else "on the original CIFAR-10 files"
    )
    head = [
        "# Reproduction: the reports' figures beside the lab's",
        "",
        "Generated by `python -m lightning_models.reproduce"
        + (" --quick" if quick else "")
        + "` from the runs' results "
        f"(`reproduction/results/`); do not edit by hand. Written {date.today().isoformat()} "
        f"on {os.cpu_count()} CPU cores ({platform.machine()}), {_device()}.",
        "",
        f"- Rows measured: {rows_done} of {rows_all}; runs: {jobs}; compute: "
        f"{total_s / 3600:.2f} h of run wall time (the sum over runs).",
        "- Measured: test accuracy of the last epoch (as the reports tested), mean ± sample std "
        "over seeds 0, 1, …; n is the number of seeds. s/epoch is the median training epoch's "
        "wall time; wall time is a whole run's fit and test.",
        f"- CIFAR-10 rows: {cifar}.",
        f"- Gaps: under each table, every row more than {AGREES} points from the report says how "
        f"many of its seeds' standard deviations that is; within {SPREAD:g} std, the report's "
        "single run is within the spread measured here. Beyond it, with more than one seed: "
        + (", ".join(beyond) if beyond else "none")
        + ".",
    ]
    if quick:
        head.append(
            "- **Every row is shortened (`--quick`: one epoch of 5 batches, one seed)**: "
            "the figures check the path, not the reports."
        )
    out.write_text("\n".join(head + body).rstrip() + "\n")
    return out


def _link(path: Path, document: Path) -> str:
    return Path(os.path.relpath(path, document.parent)).as_posix()


def _device() -> str:
    try:
        import torch

        return f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
    except Exception:  # noqa: BLE001 - the document does not depend on torch
        return "no GPU"


# ---------------------------------------------------------------- command line


def only_sweeps(reports: list[Report], ids: Sequence[str]) -> list[Report]:
    """The reports with only the sweeps named (``--sweep``); an unknown id is a ReproduceError."""
    known = {sweep.id for report in reports for sweep in report.sweeps}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ReproduceError(
            f"--sweep {' '.join(unknown)}: no such sweep in report(s) "
            f"{' '.join(r.number for r in reports)}; use one of {', '.join(sorted(known))}"
        )
    for report in reports:
        report.sweeps = [sweep for sweep in report.sweeps if sweep.id in ids]
    return [report for report in reports if report.sweeps]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_models.tools.reproduce",
        description="Run the reports' rows (resumable) and write REPRODUCTION.md from the results.",
    )
    parser.add_argument(
        "--report",
        nargs="+",
        default=list(REPORTS),
        metavar="NNN",
        help=f"reports to run (default: all of {' '.join(REPORTS)})",
    )
    parser.add_argument(
        "--sweep",
        nargs="+",
        default=None,
        metavar="ID",
        help="only these sweeps of the chosen reports (their ids in reproduction/reports/)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="seeds per row (default: each row's own, 3 for most)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shortened rows (1 epoch, 5 batches, 1 seed) into a separate folder",
    )
    parser.add_argument(
        "--launcher",
        default=None,
        help="Hydra launcher for the multiruns: joblib, submitit_local, slurm",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="paths.data_dir of the runs (MNIST, FashionMNIST, CIFAR-10)",
    )
    parser.add_argument(
        "--cifar10-jpeg",
        type=Path,
        default=None,
        help="the JPEG copy of CIFAR-10 (folder or .tar.gz) for the CIFAR-10 rows",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        default=None,
        help="where the runs go (default logs/reproduce, or logs/reproduce-quick)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="where results go (default reproduction/results; quick: under --runs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the document (default REPRODUCTION.md; quick: under --runs)",
    )
    parser.add_argument(
        "--write-only",
        action="store_true",
        help="run nothing: take the results of finished jobs, write the document",
    )
    parser.add_argument("extra", nargs="*", help="after --: overrides for every run")
    args = parser.parse_args(argv)
    for number in args.report:
        if number not in REPORTS:
            parser.error(f"--report {number} is not one of {' '.join(REPORTS)}")
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds {args.seeds} is not allowed; use 1 or more")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its event-file watcher chatters
    args = parse_args(argv)
    runs = (
        args.runs or ROOT / "logs" / ("reproduce-quick" if args.quick else "reproduce")
    ).resolve()
    results = (
        args.results or (runs / "results" if args.quick else ROOT / "reproduction" / "results")
    ).resolve()
    out = (
        args.out or (runs / "REPRODUCTION.md" if args.quick else ROOT / "REPRODUCTION.md")
    ).resolve()
    try:
        reports = load_reports(ROOT / "reproduction" / "reports", args.report)
        all_reports = load_reports(ROOT / "reproduction" / "reports", REPORTS)
        if args.sweep:
            reports = only_sweeps(reports, args.sweep)
        cifar_dir = None
        if args.cifar10_jpeg is not None and not args.write_only:
            cifar_dir = prepare_cifar(args.cifar10_jpeg.resolve(), runs)
        settings = Settings(
            runs,
            results,
            args.quick,
            args.seeds,
            args.launcher,
            args.extra,
            args.data_dir.resolve() if args.data_dir else None,
            cifar_dir,
        )
        if not args.write_only:
            run_suite(reports, settings)
        else:  # what finished since the last results were taken (e.g. the suite was stopped)
            for report in reports:
                for sweep in report.sweeps:
                    for rows, _ in multiruns(sweep, settings):
                        collect(rows, multirun_folder(rows, settings), settings)
        jpeg = args.cifar10_jpeg is not None or _results_on_jpeg(results)
        # The document always lists every report; rows not run yet say so.
        path = write_document(
            all_reports if not args.quick else reports, results, out, jpeg, args.quick
        )
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}", flush=True)
    return 0


def _results_on_jpeg(results: Path) -> bool:
    for path in results.glob("*/*/*.json"):
        try:
            if json.loads(path.read_text()).get("cifar10_jpeg"):
                return True
        except (OSError, ValueError):
            continue
    return False


if __name__ == "__main__":
    sys.exit(main())
