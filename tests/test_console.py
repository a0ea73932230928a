"""What a run shows: the config tree (printed and saved), rich's bar in a terminal and log lines
in a file, and the debug presets (conf/debug/), each run for real on generated data."""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys

import pytest
import torch

from lightning_models.console import LOG_LINES, RICH_BAR, TREE_FILE, progress_bar_target
from tests.helpers import GENERATED, ROOT, compose_train, metrics_of, run_train
from train import train


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_follows_what_stdout_is():
    assert progress_bar_target(_Terminal()) == RICH_BAR
    assert progress_bar_target(io.StringIO()) == LOG_LINES
    # A stream without isatty (some notebook and IDE consoles): lines, which every reader takes.
    assert progress_bar_target(object()) == LOG_LINES


def test_the_config_tree_is_saved_in_the_run_folder(train_cfg, tmp_path, capsys):
    train(train_cfg("trainer.fast_dev_run=true", "print_config=true"))
    saved = (tmp_path / TREE_FILE).read_text()
    printed = capsys.readouterr().out
    for part in ("data", "model", "optimizer", "trainer", "callbacks"):
        assert f"── {part}" in saved and f"── {part}" in printed
    # The parts come in reading order, each with its YAML as written (interpolations kept).
    assert saved.index("── data") < saved.index("── model") < saved.index("── trainer")
    assert "_target_: datamodules.MNISTDataModule" in saved or "FashionMNIST" in saved
    assert "num_classes: ${data.num_classes}" in saved
    assert "\x1b[" not in saved  # plain text in the file, colours only on a terminal


def test_print_config_false_leaves_no_tree(train_cfg, tmp_path):
    train(train_cfg("trainer.fast_dev_run=true", "print_config=false"))
    assert not (tmp_path / TREE_FILE).exists()


QUICK = [GENERATED, "data.val_size=100", "data.batch_size=32", "trainer.limit_val_batches=2"]


@pytest.mark.slow
def test_output_to_a_file_gets_log_lines_not_bars(data_dir, tmp_path):
    done = run_train(
        *QUICK, "trainer.max_epochs=2", "trainer.limit_train_batches=12",
        "trainer.limit_test_batches=2", "callbacks.progress_bar.refresh_rate=4",
        data_dir=data_dir, log_dir=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert "\r" not in out  # no carriage-return redraws in a file
    lines = [line for line in out.splitlines() if "[progress]" in line]
    # Every 4 batches of 12 (not at the 12th: the epoch's own line says it), then the epoch line
    # with the metrics the module logged at the epoch's end.
    assert sum("epoch 1/2  batch" in line for line in lines) == 2
    (first_end,) = [line for line in lines if "epoch 1/2 done in" in line]
    assert "train/loss" in first_end and "val/acc" in first_end
    assert any("epoch 2/2 done in" in line for line in lines)
    assert any("test done: 2 batches" in line for line in lines)
    (run_dir,) = (tmp_path / "train" / "runs").iterdir()
    assert "epoch 2/2 done in" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_a_terminal_gets_rich_bar(data_dir, tmp_path):
    # A real pseudo-terminal as stdout and stderr, as a user's shell gives.
    leader, follower = pty.openpty()
    env = {**os.environ, "LAB_DATA_DIR": str(data_dir), "LAB_LOG_DIR": str(tmp_path),
           "COLUMNS": "120", "TERM": "xterm"}  # fmt: skip
    args = [*QUICK, "trainer.max_epochs=1", "trainer.limit_train_batches=3",
            "trainer.limit_test_batches=2", "print_config=false"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=follower, stderr=follower
    )
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 300)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed when the process ended
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=60) == 0, out[-2000:]
    text = out.decode(errors="replace")
    assert "━" in text  # rich's bar
    assert "[progress]" not in text  # no log lines beside it


PRESETS = [GENERATED, "data.val_size=100", "data.batch_size=32"]


def _debug_run(preset: str, data_dir, tmp_path, *extra: str) -> dict:
    cfg = compose_train([f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path}",
                         f"paths.output_dir={tmp_path / preset}", f"debug={preset}",
                         *PRESETS, "~callbacks.progress_bar", "trainer.enable_progress_bar=false",
                         *extra])  # fmt: skip
    assert cfg.task_name == "debug" and cfg.trainer.accelerator == "cpu"
    assert cfg.trainer.detect_anomaly is True and cfg.data.num_workers == 0
    return train(cfg) | {"cfg": cfg}


@pytest.mark.slow
def test_debug_fdr_runs_one_batch_of_each_stage_and_keeps_no_checkpoint(data_dir, tmp_path):
    metrics = _debug_run("fdr", data_dir, tmp_path)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert not (tmp_path / "fdr" / "checkpoints").exists()


@pytest.mark.slow
def test_debug_limit_runs_three_short_epochs_with_checkpoints(data_dir, tmp_path):
    # The preset's shares of an epoch are for real datasets; a share of 4 generated batches
    # would be none, so the test gives counts.
    metrics = _debug_run("limit", data_dir, tmp_path, "trainer.limit_train_batches=2",
                         "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")  # fmt: skip
    assert metrics["cfg"].trainer.max_epochs == 3 and metrics["epochs"] == 3
    assert (tmp_path / "limit" / "checkpoints" / "last.ckpt").exists()
    assert metrics_of(tmp_path / "limit")["status"] == "ok"


@pytest.mark.slow
def test_debug_overfit_learns_its_three_batches(data_dir, tmp_path):
    metrics = _debug_run("overfit", data_dir, tmp_path, "trainer.max_epochs=25")
    assert metrics["cfg"].trainer.overfit_batches == 3 and metrics["cfg"].data.shuffle is False
    # The same 96 images every epoch: the model fits them far better than a first epoch does.
    assert metrics["train/acc"] > 0.9
    state = torch.load(tmp_path / "overfit" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 75


@pytest.mark.slow
def test_debug_profiler_writes_its_report(data_dir, tmp_path):
    _debug_run("profiler", data_dir, tmp_path, "trainer.limit_train_batches=3",
               "trainer.limit_val_batches=2", "trainer.limit_test_batches=2")  # fmt: skip
    report = (tmp_path / "profiler" / "fit-profile.txt").read_text()
    assert "run_training_batch" in report and "Mean duration" in report
