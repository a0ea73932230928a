"""The sweep table (summary.md, summary.csv) and figure (summary.png) of fake sweep dirs, the CLI,
and one real multirun."""

from __future__ import annotations

import csv
import json
import logging
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from lightning_models.tools import sweep_table
from lightning_models.tools.sweep_table import (
    SweepSummary,
    axis_kind,
    collect,
    load_sweep,
    summary_figure,
    write_summary,
)
from tests.helpers import FAST, ROOT, drawn, picture, run_train

NAN = float("nan")
COMMON = ["data=fashion", "trainer.max_epochs=10"]
LRS = ["0.1", "0.01", "0.001"]


def write_job(sweep: Path, num: int, overrides: list[str] | None, metrics: dict | None) -> Path:
    """A job dir as Hydra and train.py leave it; None leaves the file out."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    if overrides is not None:
        (job / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def ok(test_acc: float, val_acc: float | None = None, **extra) -> dict:
    metrics = {"test/acc": test_acc, "test/loss": 0.3, "epochs": 10, "time/total_s": 61.25}
    if val_acc is not None:
        metrics["val/acc_best"] = val_acc
    return {**metrics, "status": "ok", **extra}


@pytest.fixture
def seed_sweep(tmp_path) -> Path:
    """`-m optimizer.lr=0.1,0.01,0.001 seed=0,1,2,3 data=fashion trainer.max_epochs=10`:
    12 jobs, lr outer and seed inner as Hydra launches them, with every status."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    (sweep / "notes").mkdir()  # not a job dir: ignored
    metrics = [
        # lr 0.1: one ok, one diverged, one failed with an error, one that crashed hard
        ok(0.85, 0.86),
        {
            "test/acc": NAN,
            "test/loss": NAN,
            "val/acc_best": 0.1,
            "epochs": 10,
            "status": "diverged",
        },
        {"status": "failed", "error": "RuntimeError: boom"},
        None,
        # lr 0.01: four ok
        ok(0.8890, 0.90),
        ok(0.8910, 0.91),
        ok(0.8920, 0.92),
        ok(0.8880, 0.93),
        # lr 0.001: four ok, run without a validation set
        ok(0.70),
        ok(0.72),
        ok(0.74),
        ok(0.76),
    ]
    for num, m in enumerate(metrics):
        lr, seed = LRS[num // 4], num % 4
        write_job(sweep, num, [f"optimizer.lr={lr}", f"seed={seed}", *COMMON], m)
    return sweep


def md_tables(markdown: str) -> list[list[list[str]]]:
    """Each markdown table as rows of stripped cells, header first, rule line dropped."""
    tables, current = [], []
    for line in [*markdown.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            if not set("".join(cells)) <= set("-:"):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_rows_columns_and_launch_order(seed_sweep):
    rows = collect(seed_sweep)
    assert [r["job"] for r in rows] == list(range(12))  # job 10 after job 9, not after job 1
    assert list(rows[0]) == [
        "job", "optimizer.lr", "seed", "test/acc", "val/acc_best", "epochs", "wall s", "status",
    ]  # fmt: skip
    assert rows[0] == {
        "job": 0,
        "optimizer.lr": "0.1",
        "seed": "0",
        "test/acc": 0.85,
        "val/acc_best": 0.86,
        "epochs": 10,
        "wall s": 61.25,
        "status": "ok",
    }
    assert [r["status"] for r in rows[:4]] == ["ok", "diverged", "failed", "failed"]
    assert rows[3]["test/acc"] is None and rows[3]["optimizer.lr"] == "0.1"
    assert rows[10]["optimizer.lr"] == "0.001" and rows[10]["seed"] == "2"
    assert rows[10]["val/acc_best"] is None
    assert load_sweep(seed_sweep).common == {"data": "fashion", "trainer.max_epochs": "10"}


def test_markdown_per_job_table_common_line_and_notes(seed_sweep):
    _, _, markdown = write_summary(seed_sweep, written=datetime(2025, 3, 1, 9, 30))
    assert markdown == (seed_sweep / "summary.md").read_text()
    assert f"- sweep dir: `{seed_sweep}`" in markdown
    assert "- jobs: 12 (9 ok, 1 diverged, 2 failed)" in markdown
    assert "- written: 2025-03-01 09:30:00" in markdown
    assert "\ncommon: `data=fashion trainer.max_epochs=10`\n" in markdown
    jobs = md_tables(markdown)[0]
    assert jobs[0] == [
        "job", "optimizer.lr", "seed", "test/acc", "val/acc_best", "epochs", "wall s", "status",
    ]  # fmt: skip
    assert jobs[1] == ["0", "0.1", "0", "85.00", "86.00", "10", "61.2", "ok"]
    assert jobs[2][:4] == ["1", "0.1", "1", "nan"] and jobs[2][-1] == "diverged"
    assert jobs[4] == ["3", "0.1", "3", "—", "—", "—", "—", "failed"]
    assert [row[0] for row in jobs[1:]] == [str(n) for n in range(12)]
    assert "- job 2 failed: RuntimeError: boom" in markdown
    assert "- job 3 failed: no metrics.json" in markdown


def test_mean_std_over_seeds_matches_a_hand_computation(seed_sweep):
    _, _, markdown = write_summary(seed_sweep)
    assert "## mean ± std over seeds" in markdown
    seeds = md_tables(markdown)[1]
    assert seeds[0] == ["optimizer.lr", "n", "test/acc", "val/acc_best", "statuses"]
    # lr 0.1: only job 0 is ok -> n=1, no ±
    assert seeds[1] == ["0.1", "1", "85.00", "86.00", "1 ok, 1 diverged, 2 failed"]
    # lr 0.01: test mean 3.56/4 = 0.89; deviations ±0.001, ±0.002 -> sample var 1e-5/3,
    # std 0.0018257 -> 0.18 %; val mean 0.915, deviations ±0.005, ±0.015 -> var 5e-4/3, std 1.29 %
    assert seeds[2] == ["0.01", "4", "89.00 ± 0.18", "91.50 ± 1.29", "4 ok"]
    # lr 0.001: mean 0.73, deviations ±0.01, ±0.03 -> var 2e-3/3, std 0.025820 -> 2.58 %
    assert seeds[3] == ["0.001", "4", "73.00 ± 2.58", "—", "4 ok"]
    assert "3 of 12 jobs excluded" in markdown


def test_csv_has_every_override_and_raw_floats(seed_sweep):
    _, csv_path, _ = write_summary(seed_sweep)
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header[:5] == ["job", "optimizer.lr", "seed", "data", "trainer.max_epochs"]
    assert header[5:] == [
        "test/acc", "test/loss", "val/acc_best", "epochs", "time/total_s", "status", "error",
    ]  # fmt: skip
    assert [r["job"] for r in rows] == [str(n) for n in range(12)]
    assert rows[4]["optimizer.lr"] == "0.01" and rows[4]["data"] == "fashion"
    assert float(rows[4]["test/acc"]) == 0.889 and float(rows[0]["time/total_s"]) == 61.25
    assert rows[1]["test/acc"] == "nan" and rows[1]["status"] == "diverged"
    assert rows[2]["status"] == "failed" and rows[2]["error"] == "RuntimeError: boom"
    assert rows[3]["test/acc"] == "" and "no metrics.json" in rows[3]["error"]
    assert rows[8]["val/acc_best"] == ""
    # written by rename: nothing but the three files is left beside the job dirs
    assert sorted(p.name for p in seed_sweep.iterdir() if p.is_file()) == [
        "multirun.yaml", "summary.csv", "summary.md", "summary.png",
    ]  # fmt: skip


def a_figure(path: Path) -> bool:
    """summary.png decodes as a PNG, of a size a screen shows whole, and is not blank."""
    pixels = picture(path)
    height, width, _ = pixels.shape
    return 200 <= height <= 4000 and 300 <= width <= 4000 and drawn(pixels)


def test_summary_png_beside_the_table_is_a_real_figure(seed_sweep):
    write_summary(seed_sweep)
    assert a_figure(seed_sweep / "summary.png")


OPTIMIZERS = ["adam", "sgd"]


@pytest.fixture
def grid_sweep(tmp_path) -> tuple[Path, dict[tuple[str, str], list[float]]]:
    """`-m optimizer=adam,sgd optimizer.lr=0.1,0.01,0.001 seed=0,1,2`, every job ok; and the
    val/acc_best of each (optimizer, lr) over its seeds."""
    sweep = tmp_path / "grid"
    accs: dict[tuple[str, str], list[float]] = {}
    num = 0
    for i, name in enumerate(OPTIMIZERS):
        for j, lr in enumerate(LRS):
            for seed in range(3):
                acc = 0.5 + 0.1 * i + 0.05 * j + 0.01 * seed * (j + 1)
                accs.setdefault((name, lr), []).append(acc)
                overrides = [f"optimizer={name}", f"optimizer.lr={lr}", f"seed={seed}"]
                write_job(sweep, num, overrides, ok(acc - 0.02, acc))
                num += 1
    return sweep, accs


def lines_of(ax) -> dict[str, list[tuple[float, float, float]]]:
    """Each error-bar line of a panel: its label -> (x, y, error) per point."""
    found = {}
    for bars in ax.containers:
        line, _caps, (segments,) = bars.lines
        errors = [(top[1] - bottom[1]) / 2 for bottom, top in segments.get_segments()]
        points = zip(line.get_xdata(), line.get_ydata(), errors, strict=True)
        found[bars.get_label()] = [tuple(map(float, p)) for p in points]
    return found


def test_figure_draws_mean_and_std_over_seeds_per_factor(grid_sweep):
    sweep_dir, accs = grid_sweep
    figure = summary_figure(load_sweep(sweep_dir), "val/acc_best")
    by_factor = {ax.get_xlabel(): ax for ax in figure.axes if ax.get_visible()}
    assert set(by_factor) == {"optimizer", "optimizer.lr"}

    def expected(values: list[float]) -> tuple[float, float]:
        return 100 * statistics.fmean(values), 100 * statistics.stdev(values)

    names = by_factor["optimizer"]  # names: a category each, a line per learning rate
    assert [t.get_text() for t in names.get_xticklabels()] == OPTIMIZERS
    assert names.get_xscale() == "linear" and names.get_ylabel() == "val/acc_best (%)"
    for lr in LRS:
        assert lines_of(names)[f"optimizer.lr={lr}"] == [
            (pytest.approx(k), *map(pytest.approx, expected(accs[name, lr])))
            for k, name in enumerate(OPTIMIZERS)
        ]
    rates = by_factor["optimizer.lr"]  # three decades of rates: a log axis, a line per optimizer
    assert rates.get_xscale() == "log"
    for name in OPTIMIZERS:
        assert lines_of(rates)[f"optimizer={name}"] == [
            (pytest.approx(float(lr)), *map(pytest.approx, expected(accs[name, lr])))
            for lr in sorted(LRS, key=float)
        ]


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (["0.1", "0.01", "0.001"], "log"),
        (["1e-4", "1e-3"], "log"),
        (["32", "64", "128"], "linear"),
        (["0", "0.5", "10"], "linear"),  # zero has no place on a log axis
        (["adam", "sgd"], "category"),
        (["0.1", "adam"], "category"),
        (["0.1", None], "category"),  # a job without the key
    ],
)
def test_axis_kind_of_swept_values(values, kind):
    assert axis_kind(values) == kind


def test_figure_draws_the_optimized_metric_or_test_acc_and_none_without_ok_jobs(tmp_path):
    write_job(tmp_path, 0, ["model=fcn"], ok(0.8))  # no val/acc_best: no validation set
    write_job(tmp_path, 1, ["model=lenet5"], ok(0.9))
    (tmp_path / "multirun.yaml").write_text("optimized_metric: test/loss\nhydra: {}\n")
    write_summary(tmp_path)
    assert a_figure(tmp_path / "summary.png")
    assert summary_figure(load_sweep(tmp_path), "test/loss").axes[0].get_ylabel() == "test/loss"
    fallback = summary_figure(load_sweep(tmp_path), "val/acc_best").axes[0]
    assert fallback.get_ylabel() == "test/acc (%)"
    failed = tmp_path / "failed"
    write_job(failed, 0, ["model=fcn"], {"status": "failed", "error": "boom"})
    write_summary(failed)
    assert (failed / "summary.md").is_file() and not (failed / "summary.png").exists()


def test_broken_job_dirs_are_marked_and_hide_nothing(tmp_path, caplog):
    write_job(tmp_path, 0, ["optimizer.lr=0.1", "model=fcn"], ok(0.8, 0.81))
    (write_job(tmp_path, 1, ["optimizer.lr=0.01", "model=fcn"], None) / "metrics.json").write_text(
        "{not json"
    )
    write_job(tmp_path, 2, None, ok(0.82, 0.83))  # no overrides.yaml
    write_job(tmp_path, 3, ["optimizer.lr=0.001", "model=fcn"], {"test/acc": 0.9})  # no status
    with caplog.at_level(logging.WARNING, logger=sweep_table.__name__):
        rows = collect(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "ok"]
    assert rows[2]["optimizer.lr"] is None and rows[2]["test/acc"] == 0.82
    assert load_sweep(tmp_path).common == {"model": "fcn"}  # job 2's unknown overrides don't count
    assert "metrics.json" in caplog.text and "overrides.yaml" in caplog.text
    markdown = write_summary(tmp_path)[2]
    assert "- job 1 failed: metrics.json unreadable" in markdown
    assert "- job 2 ok: no .hydra/overrides.yaml" in markdown


def test_status_of_an_older_metrics_json_and_no_seed_table_without_seeds(tmp_path):
    write_job(tmp_path, 0, ["model=fcn"], {"test/acc": 0.5, "test/loss": NAN})
    write_job(tmp_path, 1, ["model=lenet5"], {"test/acc": 0.9, "test/loss": 0.2})
    assert [r["status"] for r in collect(tmp_path)] == ["diverged", "ok"]
    markdown = write_summary(tmp_path)[2]
    assert "mean ± std" not in markdown and "common: (none)" in markdown


def test_callback_writes_at_multirun_end_and_never_raises(seed_sweep, tmp_path, capsys):
    callback = SweepSummary()
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(seed_sweep)}}}))
    assert (seed_sweep / "summary.md").is_file() and (seed_sweep / "summary.csv").is_file()
    assert "| job | optimizer.lr | seed |" in capsys.readouterr().out
    callback.on_multirun_end(OmegaConf.create({}))  # no hydra.sweep.dir
    callback.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "x")}}}))


def test_callback_refreshes_the_table_after_each_multirun_job(tmp_path):
    write_job(tmp_path, 0, ["model=fcn"], ok(0.8))

    def job_end(mode):
        cfg = OmegaConf.create({"hydra": {"mode": mode, "sweep": {"dir": str(tmp_path)}}})
        SweepSummary().on_job_end(cfg, job_return=None)

    job_end(RunMode.RUN)
    assert not (tmp_path / "summary.md").exists()  # a single run has no sweep table
    job_end(RunMode.MULTIRUN)
    assert (tmp_path / "summary.md").is_file()


def test_main_explains_a_job_dir(seed_sweep, capsys):
    assert sweep_table.main([str(seed_sweep / "3")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {seed_sweep / '3'} is job 3 of a sweep, not the sweep dir; " + (
        f"give {seed_sweep}."
    )


@pytest.mark.slow
def test_cli_rebuilds_the_table_and_rejects_a_non_sweep_dir(seed_sweep, tmp_path):
    (tmp_path / "plain").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_models.tools.sweep_table",
            str(seed_sweep),
            tmp_path / "plain",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "89.00 ± 0.18" in result.stdout and (seed_sweep / "summary.csv").is_file()
    assert result.stdout.startswith("# Sweep summary")
    assert f"error: {tmp_path / 'plain'} is not a sweep dir" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_real_multirun_writes_the_table(data_dir, tmp_path):
    result = run_train("-m", "optimizer.lr=0.01,0.001", *FAST, data_dir=data_dir, log_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    markdown = (sweep / "summary.md").read_text()
    assert "| job | optimizer.lr |" in markdown and "~callbacks.progress_bar" in markdown
    assert "| job | optimizer.lr |" in result.stdout  # printed at the end of the sweep
    with (sweep / "summary.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["optimizer.lr"]) for r in rows] == [("0", "0.01"), ("1", "0.001")]
    assert all(r["status"] in ("ok", "diverged") and 0 <= float(r["test/acc"]) <= 1 for r in rows)
    assert a_figure(sweep / "summary.png")
