"""The sweep table: ``summary.md`` and ``summary.csv`` in a Hydra multirun's sweep dir.

After ``python train.py -m optimizer.lr=1e-2,1e-3 seed=0,1,2`` the sweep dir holds one numbered
job dir per combination (``.hydra/overrides.yaml``, ``metrics.json``). This module reads them all
and writes the table a report needs: one row per job with the values the sweep varied, test and
best validation accuracy, epochs, wall time and status; and, when the sweep varies ``seed``, the
mean ± std over seeds of each configuration. ``summary.png`` beside it draws the optimised metric
(``optimized_metric``) against each swept value, mean ± std over seeds, one line per value of the
other swept factors.

``SweepSummary`` (registered under ``callbacks:`` in ``conf/hydra/default.yaml``) writes the
files when a multirun ends; to rebuild them for any existing sweep dir:

    python -m lightning_models.tools.sweep_table logs/train/multiruns/<stamp> [<sweep_dir> ...]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightning_models.checks import is_number
from lightning_models.files import atomic_file

log = logging.getLogger(__name__)

MD_NAME = "summary.md"
CSV_NAME = "summary.csv"
PNG_NAME = "summary.png"
# summary.png draws the sweep's optimized_metric (train.yaml's default where multirun.yaml names
# none), or test/acc where no job reports it (a sweep without a validation set).
DEFAULT_METRIC = "val/acc_best"
FALLBACK_METRIC = "test/acc"
MAX_LINES = 10  # more configurations than this are drawn as points, without lines or legend
SEED_KEY = "seed"
MISSING = "—"
STATUS_ORDER = ("ok", "diverged", "failed")
# Per-job table: column title -> metrics.json key.
TABLE_METRICS = {
    "test/acc": "test/acc",
    "val/acc_best": "val/acc_best",
    "epochs": "epochs",
    "wall s": "time/total_s",
}
# The CSV lists these metrics first, then any other number a metrics.json holds, sorted.
CSV_METRICS = ("test/acc", "test/loss", "val/acc_best", "epochs", "time/total_s")


@dataclass
class Job:
    """One numbered job dir, as read from disk."""

    num: int
    path: Path
    overrides: dict[str, str] | None  # None when .hydra/overrides.yaml is missing or unreadable
    metrics: dict[str, Any]
    status: str
    note: str = ""  # why the job failed or could not be read; listed under the table


@dataclass
class Sweep:
    """A sweep dir's jobs in launch order, and which override keys the sweep varied."""

    path: Path
    jobs: list[Job]
    keys: list[str]  # every override key, in command-line order
    varying: list[str]  # keys whose value differs between jobs
    common: dict[str, str]  # the others, with their one value


# ---------------------------------------------------------------- reading


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Numbered sub-dirs, sorted numerically: job 10 comes after job 9, as Hydra launched them."""
    dirs = [p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.name))


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["optimizer.lr=0.01", "+x=1", "~callbacks.progress_bar"]`` -> key: value (as typed)."""
    overrides = {}
    for item in items:
        key, _, value = str(item).partition("=")
        # Adding (+) or forcing (++) a key is how it was set, not which key: one column either way.
        overrides[key.lstrip("+")] = value
    return overrides


def format_override(key: str, value: str) -> str:
    return key if key.startswith("~") and not value else f"{key}={value}"


def read_overrides(path: Path) -> dict[str, str]:
    items = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(items, list):
        raise ValueError(f"expected a YAML list of overrides, found {type(items).__name__}")
    return parse_overrides(items)


def infer_status(metrics: dict[str, Any]) -> str:
    """Status of a metrics.json written before train.py recorded one: any non-finite number
    (a NaN loss) means the run diverged."""
    numbers = [v for v in metrics.values() if is_number(v)]
    return "ok" if all(math.isfinite(v) for v in numbers) else "diverged"


def read_metrics(path: Path) -> tuple[dict[str, Any], str, str]:
    """(metrics, status, note) of one job; a job that left no metrics.json crashed hard."""
    if not path.is_file():
        return {}, "failed", "no metrics.json (the job crashed before writing it)"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError(f"expected a JSON object, found {type(metrics).__name__}")
    except (OSError, ValueError) as err:
        log.warning("Sweep table: cannot read %s (%s); the job is listed as failed", path, err)
        return {}, "failed", f"metrics.json unreadable: {err}"
    status = str(metrics.get("status") or infer_status(metrics))
    note = str(metrics.get("error") or "") if status != "ok" else ""
    return metrics, status, note


def read_job(path: Path) -> Job:
    """Everything the table needs from one job dir; a broken file is a note, never an error."""
    metrics, status, note = read_metrics(path / "metrics.json")
    overrides_file = path / ".hydra" / "overrides.yaml"
    try:
        overrides = read_overrides(overrides_file)
    except (OSError, ValueError, yaml.YAMLError) as err:
        log.warning("Sweep table: cannot read %s (%s)", overrides_file, err)
        overrides = None
        problem = "no .hydra/overrides.yaml" if not overrides_file.exists() else "bad overrides"
        note = f"{note}; {problem}" if note else problem
    return Job(int(path.name), path, overrides, metrics, status, note)


def split_overrides(jobs: Sequence[Job]) -> tuple[list[str], list[str], dict[str, str]]:
    """(all keys, keys that vary between jobs, common key: value) over the readable jobs."""
    known = [j.overrides for j in jobs if j.overrides is not None]
    keys = list(dict.fromkeys(k for overrides in known for k in overrides))
    # A key missing from some jobs (None there) varies too.
    varying = [k for k in keys if len({o.get(k) for o in known}) > 1]
    common = {k: known[0][k] for k in keys if k not in varying}
    return keys, varying, common


def load_sweep(sweep_dir: str | os.PathLike) -> Sweep:
    path = Path(sweep_dir)
    jobs = [read_job(p) for p in job_dirs(path)]
    keys, varying, common = split_overrides(jobs)
    return Sweep(path, jobs, keys, varying, common)


# ---------------------------------------------------------------- rows


def metric(job: Job, key: str) -> float | None:
    value = job.metrics.get(key)
    return value if is_number(value) else None


def job_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job: job number, the varied overrides, the metrics (raw), the status."""
    rows = []
    for job in sweep.jobs:
        row: dict[str, Any] = {"job": job.num}
        row.update({k: (job.overrides or {}).get(k) for k in sweep.varying})
        row.update({title: metric(job, key) for title, key in TABLE_METRICS.items()})
        row["status"] = job.status
        rows.append(row)
    return rows


def collect(sweep_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-job rows of a sweep dir, in launch order.

    Columns: ``job``, each override key whose value differs between jobs (the value as typed),
    ``test/acc``, ``val/acc_best`` (fractions, None when absent), ``epochs``, ``wall s``
    (``time/total_s``) and ``status``. ``load_sweep(dir).common`` has the keys left out.
    """
    return job_rows(load_sweep(sweep_dir))


def mean_std(values: Sequence[float]) -> tuple[float, float | None] | None:
    """(mean, sample std) of the values; std None for one value; None for none."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return statistics.fmean(values), std


def count_statuses(jobs: Sequence[Job]) -> str:
    """'3 ok, 1 diverged': known statuses in a fixed order, any other after them."""
    counts = Counter(j.status for j in jobs)
    order = [s for s in STATUS_ORDER if s in counts] + sorted(set(counts) - set(STATUS_ORDER))
    return ", ".join(f"{counts[s]} {s}" for s in order)


def seed_groups(sweep: Sweep) -> dict[tuple[tuple[str, str | None], ...], list[Job]]:
    """Jobs grouped by every override except the seed, in launch order; {} unless the sweep
    varies the seed and some configuration ran with several seeds."""
    if SEED_KEY not in sweep.varying:
        return {}
    others = [k for k in sweep.varying if k != SEED_KEY]
    groups: dict[tuple[tuple[str, str | None], ...], list[Job]] = {}
    for job in sweep.jobs:
        if job.overrides is not None:  # without its overrides a job has no configuration
            config = tuple((k, job.overrides.get(k)) for k in others)
            groups.setdefault(config, []).append(job)
    return groups if any(len(g) > 1 for g in groups.values()) else {}


def seed_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per configuration: its overrides, n ok jobs, (mean, std) of test/acc and
    val/acc_best over the ok jobs, and the statuses of all its jobs."""
    rows = []
    for config, jobs in seed_groups(sweep).items():
        ok = [j for j in jobs if j.status == "ok"]
        row: dict[str, Any] = dict(config)
        row["n"] = len(ok)
        for key in ("test/acc", "val/acc_best"):
            row[key] = mean_std([v for j in ok if (v := metric(j, key)) is not None])
        row["statuses"] = count_statuses(jobs)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- formatting


def fmt_pct(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{100 * value:.2f}" if math.isfinite(value) else str(value)


def fmt_mean_std(value: tuple[float, float | None] | None) -> str:
    if value is None:
        return MISSING
    mean, std = value
    return fmt_pct(mean) if std is None else f"{fmt_pct(mean)} ± {fmt_pct(std)}"


def fmt_cell(column: str, value: Any) -> str:
    if value is None:
        return MISSING
    if column in ("test/acc", "val/acc_best"):
        return fmt_mean_std(value) if isinstance(value, tuple) else fmt_pct(value)
    if column == "epochs":
        return str(int(value))
    if column == "wall s":
        return f"{value:.1f}"
    return str(value)


NUMERIC = {"job", "n", "test/acc", "val/acc_best", "epochs", "wall s"}


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A padded GitHub markdown table (numbers right-aligned), readable raw in a terminal too."""
    cells = [[fmt_cell(c, row.get(c)).replace("|", r"\|") for c in columns] for row in rows]
    widths = [max([len(c), 3, *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if c in NUMERIC else v.ljust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (w - 1) + ":" if c in NUMERIC else "-" * w
        for w, c in zip(widths, columns, strict=True)
    ]
    return "\n".join([line(columns), line(rule), *(line(r) for r in cells)])


def seed_section(sweep: Sweep) -> list[str]:
    rows = seed_rows(sweep)
    if not rows:
        return []
    columns = [k for k in sweep.varying if k != SEED_KEY]
    columns += ["n", "test/acc", "val/acc_best", "statuses"]
    grouped = sum(len(g) for g in seed_groups(sweep).values())
    excluded = grouped - sum(r["n"] for r in rows)
    return [
        "## mean ± std over seeds",
        "",
        markdown_table(rows, columns),
        "",
        f"n: ok jobs of the configuration; only they enter mean ± std (sample std), "
        f"{excluded} of {grouped} jobs excluded.",
        "",
    ]


def render_markdown(sweep: Sweep, written: datetime) -> str:
    common = " ".join(format_override(k, v) for k, v in sweep.common.items())
    columns = ["job", *sweep.varying, *TABLE_METRICS, "status"]
    notes = [f"- job {j.num} {j.status}: {j.note}" for j in sweep.jobs if j.note]
    lines = [
        "# Sweep summary",
        "",
        f"- sweep dir: `{sweep.path}`",
        f"- jobs: {len(sweep.jobs)}" + (f" ({count_statuses(sweep.jobs)})" if sweep.jobs else ""),
        f"- written: {written:%Y-%m-%d %H:%M:%S}",
        "- accuracies in %, wall s = seconds of fit + test",
        "",
        f"common: `{common}`" if common else "common: (none)",
        "",
        markdown_table(job_rows(sweep), columns),
        "",
    ]
    if notes:
        lines += [*notes, ""]
    return "\n".join(lines + seed_section(sweep))


def render_csv(sweep: Sweep) -> str:
    """One row per job with every override key and every number of metrics.json, raw."""
    found = {k for j in sweep.jobs for k, v in j.metrics.items() if is_number(v)}
    metric_keys = [*CSV_METRICS, *sorted(found - set(CSV_METRICS))]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["job", *sweep.keys, *metric_keys, "status", "error"])
    for job in sweep.jobs:
        overrides = [(job.overrides or {}).get(k, "") for k in sweep.keys]
        metrics = [_raw(metric(job, k)) for k in metric_keys]
        writer.writerow([job.num, *overrides, *metrics, job.status, job.note])
    return out.getvalue()


def _raw(value: float | None) -> str:
    return "" if value is None else repr(value)  # repr: shortest string that reads back exact


# ---------------------------------------------------------------- writing


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write the whole file at once: a reader never sees half a table."""
    with atomic_file(path, "wb" if isinstance(text, bytes) else "w") as f:
        f.write(text)


def write_summary(
    sweep_dir: str | os.PathLike, written: datetime | None = None, metric: str | None = None
) -> tuple[Path, Path, str]:
    """Write summary.md, summary.csv and (when a job has a figure to draw) summary.png into the
    sweep dir, the figure of ``metric`` (else the sweep's optimized_metric); return the two
    tables' paths and the markdown."""
    sweep = load_sweep(sweep_dir)
    markdown = render_markdown(sweep, written or datetime.now())
    md_path, csv_path = sweep.path / MD_NAME, sweep.path / CSV_NAME
    atomic_write(md_path, markdown)
    atomic_write(csv_path, render_csv(sweep))
    write_plot(sweep, metric or optimized_metric(sweep.path))
    return md_path, csv_path, markdown


# ---------------------------------------------------------------- summary.png


def optimized_metric(sweep_dir: Path) -> str:
    """The ``optimized_metric`` of the sweep's config (multirun.yaml), else train.yaml's default."""
    try:
        config = yaml.safe_load((sweep_dir / "multirun.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        config = None
    value = config.get("optimized_metric") if isinstance(config, dict) else None
    return str(value) if value else DEFAULT_METRIC


def axis_kind(values: Sequence[str | None]) -> str:
    """How to lay out swept values: "log" for positive numbers a decade or more apart (learning
    rates, weight decays), "linear" for other numbers, "category" for anything else (names)."""
    try:
        numbers = [float(v) for v in values if v is not None]
    except ValueError:
        return "category"
    if len(numbers) < len(values) or not all(math.isfinite(n) for n in numbers):
        return "category"
    if min(numbers) > 0 and max(numbers) / min(numbers) >= 10:
        return "log"
    return "linear"


def config_values(sweep: Sweep, metric: str) -> dict[tuple[str | None, ...], list[float]]:
    """The ``metric`` of each ok job, by its configuration: its values of the swept factors
    (every varied key but the seed, in command-line order)."""
    factors = [k for k in sweep.varying if k != SEED_KEY]
    found: dict[tuple[str | None, ...], list[float]] = {}
    for job in sweep.jobs:
        value = metric_of(job, metric)
        if job.status == "ok" and job.overrides is not None and value is not None:
            found.setdefault(tuple(job.overrides.get(k) for k in factors), []).append(value)
    return found


def metric_of(job: Job, key: str) -> float | None:
    value = metric(job, key)
    return value if value is not None and math.isfinite(value) else None


def plotted_metric(sweep: Sweep, wanted: str) -> str | None:
    """``wanted`` if an ok job reports it, else test/acc if one does, else None."""
    for key in dict.fromkeys([wanted, FALLBACK_METRIC]):
        if config_values(sweep, key):
            return key
    return None


def summary_figure(sweep: Sweep, wanted: str) -> Any | None:
    """The figure of summary.png (module docstring): one panel per swept factor, the metric's
    mean ± std over seeds against its values, a line per value of the other factors. None when
    no ok job reports a figure to draw."""
    from lightning_models.tools import plots

    metric_key = plotted_metric(sweep, wanted)
    if metric_key is None:
        return None
    values = config_values(sweep, metric_key)
    factors = [k for k in sweep.varying if k != SEED_KEY]
    scale = 100.0 if "acc" in metric_key else 1.0
    ylabel = f"{metric_key} (%)" if scale == 100.0 else metric_key
    seeds = " (mean ± std over seeds)" if SEED_KEY in sweep.varying else ""
    panels = factors or [None]
    plt = plots.pyplot()
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.4 * columns, 4.2 * rows), dpi=100, squeeze=False
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, factor in zip(axes.flat, panels, strict=False):
        _draw_panel(ax, values, factors, factor, scale)
        plots.label_axes(ax, factor or "configuration", ylabel)
    fig.suptitle(f"sweep {sweep.path.name}: {metric_key}{seeds}", fontsize=10)
    return fig


def _draw_panel(
    ax: Any,
    values: dict[tuple[str | None, ...], list[float]],
    factors: list[str],
    factor: str | None,
    scale: float,
) -> None:
    from lightning_models.tools import plots

    i = factors.index(factor) if factor is not None else None
    xs = list(dict.fromkeys(c[i] for c in values)) if i is not None else ["all jobs"]
    kind = axis_kind(xs) if i is not None else "category"
    if kind != "category":
        xs.sort(key=lambda v: float(v))
    position = {x: (float(x) if kind != "category" else k) for k, x in enumerate(xs)}
    lines: dict[tuple[str | None, ...], list[tuple[float, float, float | None]]] = {}
    for config, found in values.items():
        others = tuple(v for k, v in enumerate(config) if k != i)
        mean, std = mean_std([scale * v for v in found])
        x = position[config[i]] if i is not None else 0
        lines.setdefault(others, []).append((x, mean, std))
    other_keys = [k for k in factors if k != factor]
    for k, (others, points) in enumerate(lines.items()):
        points.sort()
        x, y, e = zip(*points, strict=True)
        if len(lines) > MAX_LINES:
            ax.errorbar(x, y, yerr=[s or 0.0 for s in e], fmt="s", color="C0", capsize=3)
            continue
        label = " ".join(
            format_override(key, str(v)) for key, v in zip(other_keys, others, strict=True)
        )
        plots.mean_std_line(ax, x, y, e, label, f"C{k % 10}")
    if kind == "log":
        ax.set_xscale("log")
    elif kind == "category":
        ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=30 if len(xs) > 6 else 0)


def write_plot(sweep: Sweep, metric_key: str) -> Path | None:
    """summary.png of the sweep, or None when there is nothing to draw. Never raises: the tables
    are written already, and a figure that fails is a warning."""
    try:
        fig = summary_figure(sweep, metric_key)
        if fig is None:
            return None
        from lightning_models.tools import plots

        buffer = io.BytesIO()
        plots.save(fig, buffer)
        path = sweep.path / PNG_NAME
        atomic_write(path, buffer.getvalue())
        return path
    except Exception as err:  # noqa: BLE001 (see the docstring)
        log.warning("Sweep figure not written: %s: %s", type(err).__name__, err)
        return None


# ---------------------------------------------------------------- Hydra callback


class SweepSummary(Callback):
    """Writes the sweep table (and figure) when a multirun ends, and refreshes it after each of
    its jobs.

    The refresh matters for sweeps that stop early (Ctrl-C, a killed process, or Hydra's basic
    sweeper raising for a job that raised, before ``on_multirun_end``): their table still lists
    the jobs that finished. With the joblib or submitit launchers ``on_job_end`` runs in the
    worker that ran the job, ``on_multirun_end`` in the launching process: the files are
    replaced atomically, so jobs ending together never leave half a table. A DDP job's processes
    of rank > 0 that run Hydra themselves (SLURM tasks) leave the table to rank 0.
    Never raises: a problem is one warning, and the sweep's own result stands.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        result = self._write(config)
        if result is not None:
            md_path, csv_path, markdown = result
            print("\n" + markdown, flush=True)
            log.info("Sweep table: %s and %s", md_path, csv_path)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        try:
            mode = OmegaConf.select(config, "hydra.mode")  # a RunMode in Hydra's own config
        except Exception:  # noqa: BLE001 (a callback must not break the job it follows)
            mode = None
        if getattr(mode, "name", mode) == RunMode.MULTIRUN.name and _rank() == 0:
            self._write(config)  # a single run has no table

    @staticmethod
    def _write(config: DictConfig) -> tuple[Path, Path, str] | None:
        try:
            sweep_dir = OmegaConf.select(config, "hydra.sweep.dir")
            if sweep_dir is None:
                raise ValueError("the config has no hydra.sweep.dir")
            metric_key = OmegaConf.select(config, "optimized_metric", default=None)
            return write_summary(str(sweep_dir), metric=metric_key)
        except Exception as err:  # noqa: BLE001 (see the class docstring)
            log.warning("Sweep table not written: %s: %s", type(err).__name__, err)
            return None


def _rank() -> int:
    """This process's DDP rank as the environment gives it (0 outside DDP), as Lightning reads it;
    imported here, so that the table's command line does not load Lightning."""
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank


# ---------------------------------------------------------------- command line


def not_a_sweep_dir(path: Path) -> str | None:
    """One sentence saying why ``path`` is not a sweep dir, or None when it is one."""
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        return f"{path} {what}; give a sweep dir such as logs/train/multiruns/<stamp>."
    if (path / "multirun.yaml").is_file() or any((p / ".hydra").is_dir() for p in job_dirs(path)):
        return None
    if (path / ".hydra").is_dir() and path.name.isdigit():
        return f"{path} is job {path.name} of a sweep, not the sweep dir; give {path.parent}."
    return (
        f"{path} is not a sweep dir: it holds neither multirun.yaml nor numbered job dirs "
        "(python train.py -m ... makes them under logs/train/multiruns/<stamp>)."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_models.tools.sweep_table",
        description="Rebuild summary.md, summary.csv and summary.png of Hydra sweep dirs; print "
        "the tables.",
    )
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="sweep_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    code = 0
    for sweep_dir in args.sweep_dirs:
        problem = not_a_sweep_dir(sweep_dir)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            code = 2
            continue
        try:
            md_path, csv_path, markdown = write_summary(sweep_dir)
        except OSError as err:
            print(f"error: cannot write the table into {sweep_dir}: {err}", file=sys.stderr)
            code = code or 1
            continue
        print(markdown, flush=True)
        # stderr, so that `... > table.md` captures the markdown alone
        print(f"wrote {md_path} and {csv_path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
