"""``python -m lightning_models.tools.lr_find``: Lightning's learning-rate range test on the run
train.py would build, its plot and curve in a run folder, its bad settings refused before any
folder is made."""

from __future__ import annotations

import csv
import re

import pytest
import torch

from lightning_models.checks import LabError
from lightning_models.tools.lr_find import PLOT, TABLE, check_settings, steepest_fall
from tests.helpers import FAST, compose_train, drawn, picture, run_tool

TOOL = "lightning_models.tools.lr_find"
# FAST, less what conf/lr_find.yaml has no use for (it has no callbacks), with 10 batches an
# epoch: 20 steps take 2 epochs.
SETTINGS = [
    *(o for o in FAST if o != "~callbacks.progress_bar" and "limit_train" not in o),
    "trainer.limit_train_batches=10",
    "trainer.max_epochs=3",
    "lr_find.num_training=20",
    "data=mnist",
]

BAD = [
    (["lr_find.num_training=5"], "lr_find.num_training=5 is not allowed"),
    (["lr_find.min_lr=0"], "lr_find.min_lr=0 is not allowed"),
    (["lr_find.max_lr=1e-9"], "lr_find.max_lr=1e-09 is not allowed; use a number above"),
    (["lr_find.mode=cosine"], "lr_find.mode='cosine' is not allowed"),
    (["lr_find.early_stop_threshold=0.5"], "lr_find.early_stop_threshold=0.5 is not allowed"),
    (["model=softmax_regression_manual"], "SoftmaxRegression updates its weights by hand"),
]


@pytest.mark.parametrize(("overrides", "sentence"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_settings_are_one_sentence(overrides, sentence):
    with pytest.raises(LabError) as raised:
        check_settings(compose_train(overrides, config_name="lr_find"))
    assert sentence in str(raised.value)


def test_the_config_is_train_py_s_with_the_range_test_s_settings():
    cfg = compose_train(["model=cifar_cnn", "optimizer=sgd"], config_name="lr_find")
    assert cfg.task_name == "lr_find" and cfg.model.net._target_.endswith("CifarCNN")
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert not cfg.get("callbacks") and not cfg.get("logger")
    assert set(cfg.lr_find) == {"min_lr", "max_lr", "num_training", "mode", "early_stop_threshold"}


@pytest.mark.slow
def test_it_prints_a_suggestion_and_writes_the_plot(data_dir, tmp_path):
    result = run_tool(TOOL, *SETTINGS, data_dir=data_dir, log_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (tmp_path / "lr_find" / "runs").iterdir()
    found = re.search(r"suggested learning rate: (\S+)\s+\(optimizer\.lr=(\S+)\)", result.stdout)
    assert found, result.stdout
    suggestion = float(found.group(1))
    assert 1e-8 <= suggestion <= 1.0
    assert str(run / PLOT) in result.stdout
    pixels = picture(run / PLOT)  # a whole PNG, decoded
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200 and drawn(pixels)
    with (run / TABLE).open() as f:
        rows = list(csv.DictReader(f))
    assert 10 < len(rows) <= 20
    lrs = [float(row["lr"]) for row in rows]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-8)
    # one of the rates tried, as printed (3 significant digits)
    assert min(lrs, key=lambda lr: abs(lr - suggestion)) == pytest.approx(suggestion, rel=5e-3)
    # Nothing trained for good is left: no checkpoint (nor Lightning's temporary one), no logs.
    assert {p.name for p in run.iterdir()} == {".hydra", PLOT, TABLE, "lr_find.log"}


@pytest.mark.slow
def test_a_bad_setting_leaves_no_folder(data_dir, tmp_path):
    result = run_tool(TOOL, *SETTINGS, "lr_find.mode=cosine", data_dir=data_dir, log_dir=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: lr_find.mode='cosine'")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "lr_find").exists()


def test_the_suggestion_is_the_steepest_fall_against_log_lr():
    # Flat, then a fall centred on 1e-3, then a rise; a wiggle of 0.01 among the smallest rates,
    # whose steps are 1e-8 wide, is steep against lr itself but not against log10(lr).
    lrs = torch.logspace(-8, 0, 100, dtype=torch.float64)
    position = lrs.log10()
    losses = 2.3 - torch.sigmoid(3 * (position + 3)) + torch.relu(position + 1)
    losses[15] -= 0.01
    index = steepest_fall(lrs.tolist(), losses.tolist(), log_spaced=True)
    assert 3e-4 < lrs[index] < 3e-3
    assert steepest_fall(lrs[:12].tolist(), losses[:12].tolist(), log_spaced=True) is None
