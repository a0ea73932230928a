"""Every experiment of the reports composes, cites its report figure, and sweeps run whole."""

import csv

import pytest

from lightning_models import ImageClassifier
from lightning_models.build import instantiate_node as build
from tests.helpers import CONF, FAST, compose_train, run_train

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_the_report_experiments_exist():
    assert {
        "fashion_fcn", "fashion_lenet5", "fashion_lenet5_lr_sweep", "fashion_lenet5_wd_sweep",
        "fashion_lenet5_batch_sweep", "fashion_lenet5_loss", "fashion_lenet5_modified",
        "mnist_lenet5_sgd_grid", "mnist_lenet5_adam_nll_grid", "mnist_softmax_manual",
        "cifar10_mlp_deep", "cifar10_convnets", "cifar10_cnn",
    } <= set(EXPERIMENTS)  # fmt: skip


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_builds_and_cites_its_report(name):
    header = (CONF / "experiment" / f"{name}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_"
    assert any("Report" in line for line in header[:3]) and any("Reported" in h for h in header)
    cfg = compose_train([f"experiment={name}"])
    assert isinstance(build(cfg.model), ImageClassifier)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fashion_lenet5", {"optimizer.lr": 1e-3, "data.batch_size": 100,
                            "trainer.max_epochs": 10}),
        ("fashion_lenet5_modified_report_recipe", {"optimizer.lr": 1e-2, "trainer.max_epochs": 20,
                                                   "data.batch_size": 100, "data.val_size": 0,
                                                   "data.augment": False,
                                                   "loss.label_smoothing": 0.0,
                                                   "scheduler.interval": "step",
                                                   "scheduler.scheduler.step_size": 1000,
                                                   "scheduler.scheduler.gamma": 0.9}),
        ("fashion_lenet5_modified", {"optimizer.lr": 1e-2, "trainer.max_epochs": 20,
                                     "data.batch_size": 100, "data.val_size": 0,
                                     "scheduler.interval": "step",
                                     "loss.label_smoothing": 0.1}),
        ("mnist_lenet5_adam_nll_grid", {"loss._target_": "torch.nn.NLLLoss",
                                        "model.net.log_softmax": True}),
        ("mnist_lenet5_sgd_grid", {"optimizer._target_": "torch.optim.SGD", "optimizer.lr": 0.1,
                                   "data.batch_size": 64, "model.net.log_softmax": False}),
        ("cifar10_cnn", {"optimizer.nesterov": True, "optimizer.momentum": 0.9,
                         "data.val_size": 1000}),
    ],
)  # fmt: skip
def test_recipes_match_the_reports(name, expected):
    from omegaconf import OmegaConf

    cfg = compose_train([f"experiment={name}"])
    assert {key: OmegaConf.select(cfg, key) for key in expected} == expected


@pytest.mark.slow
def test_lr_sweep_runs_the_five_rates_into_a_table_in_report_order(data_dir, tmp_path):
    result = run_train(
        "-m", "experiment=fashion_lenet5_lr_sweep", *FAST, data_dir=data_dir, log_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["optimizer.lr"]) for r in rows] == [1e-3, 1e-4, 1e-5, 1e-2, 1e-1]
    assert all(r["status"] in ("ok", "diverged") and r["test/acc"] for r in rows)
    table = (sweep / "summary.md").read_text()
    assert "optimizer.lr" in table and table.count("\n| ") >= 6  # header + 5 rows
