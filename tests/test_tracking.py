"""Experiment tracking beside TensorBoard: what reaches MLflow (a local SQLite store) and W&B
(offline), read back with their own readers and compared with what TensorBoard got; the lab
without their packages; and TensorBoard's HParams columns (report.hparams_of)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig

from lightning_models import LabError
from lightning_models.build import build_run
from lightning_models.callbacks import ACCURACY_COLUMNS
from lightning_models.checks import ValidateBeforeRun
from lightning_models.report import hparams_of
from tests.helpers import (
    FAST,
    compose_train,
    drawn,
    hparams_columns,
    picture,
    run_train,
    scalars,
    tensorboard_image,
)
from train import run, train

# The tracking extra is optional: without it (pip install -e ".[dev]") its runs are skipped.
needs_mlflow = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None, reason='mlflow: pip install -e ".[tracking]"'
)
needs_wandb = pytest.mark.skipif(
    importlib.util.find_spec("wandb") is None, reason='wandb: pip install -e ".[tracking]"'
)

IMAGES = ("test/confusion_matrix", "test/correct", "test/misclassified")
NAN_AT = ["loss._target_=tests.helpers.NaNLossAfter", "+loss.after_steps=1"]


@pytest.fixture
def offline(tmp_path, monkeypatch, no_internet):
    """W&B offline and silent, with its settings, cache and artifacts under ``tmp_path``; MLflow's
    usage telemetry off; no connection out of this process (``no_internet``) by the end."""
    home = tmp_path / "home"
    env = {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_DATA_DIR": str(home / "data"),
        "WANDB_ARTIFACT_DIR": str(home / "artifacts"),
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield
    assert no_internet == []


# --- the HParams columns ------------------------------------------------------------------------

PARTS = ["optimizer=sgd", "scheduler=cosine", "init=kaiming_normal"]


def test_hparams_name_each_part_by_its_choice_beside_its_values(train_cfg):
    cfg = train_cfg(*PARTS)
    hparams = hparams_of(cfg)
    assert not [key for key in hparams if "_target_" in key or "_partial_" in key]
    assert hparams["optimizer"] == "sgd" and hparams["optimizer/lr"] == cfg.optimizer.lr
    assert hparams["optimizer/weight_decay"] == cfg.optimizer.weight_decay
    # The scheduler's own values sit beside Lightning's interval, not under scheduler/scheduler/.
    assert hparams["scheduler"] == "cosine" and hparams["scheduler/interval"] == "epoch"
    assert hparams["scheduler/T_max"] == cfg.trainer.max_epochs
    assert hparams["loss"] == "cross_entropy" and "loss/label_smoothing" in hparams
    assert hparams["init"] == "kaiming_normal" and hparams["init/layers"] == ["Conv2d", "Linear"]
    assert hparams["model"] == "lenet5" and hparams["batch_size"] == cfg.data.batch_size


def test_hparams_without_hydra_name_each_part_by_its_class(train_cfg, monkeypatch):
    cfg = train_cfg(*PARTS)
    monkeypatch.setattr(HydraConfig, "initialized", lambda: False)
    hparams = hparams_of(cfg)
    assert (hparams["optimizer"], hparams["scheduler"], hparams["loss"]) == (
        "SGD", "CosineAnnealingLR", "CrossEntropyLoss",
    )  # fmt: skip
    assert hparams["optimizer/lr"] == cfg.optimizer.lr
    assert hparams_of(train_cfg())["scheduler"] == "none"  # the empty group


def test_tensorboard_hparams_tab_shows_the_parts_by_name(train_cfg, tmp_path):
    cfg = train_cfg(*PARTS)
    train(cfg)
    columns = hparams_columns(tmp_path)
    assert set(columns) == set(hparams_of(cfg))
    assert not [name for name in columns if "_target_" in name or "_partial_" in name]
    assert columns["optimizer"] == "sgd" and columns["scheduler"] == "cosine"
    assert columns["optimizer/lr"] == pytest.approx(cfg.optimizer.lr)
    assert columns["optimizer/weight_decay"] == pytest.approx(cfg.optimizer.weight_decay)


# --- choosing loggers ---------------------------------------------------------------------------


def test_loggers_combine_as_a_list_of_the_group():
    cfg = compose_train(["logger=[tensorboard,csv,mlflow,wandb]"])
    assert {name: node._target_.rsplit(".", 1)[-1] for name, node in cfg.logger.items()} == {
        "tensorboard": "TensorBoardLogger", "csv": "CSVLogger", "mlflow": "MLFlowLogger",
        "wandb": "WandbLogger",
    }  # fmt: skip


@pytest.mark.parametrize("package", ["mlflow", "wandb"])
def test_a_logger_without_its_package_is_one_sentence_before_anything_is_built(
    train_cfg, tmp_path, monkeypatch, package
):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: no import, no spec
    cfg = train_cfg(f"logger=[tensorboard,{package}]")
    with pytest.raises(LabError) as caught:
        build_run(cfg)
    assert str(caught.value).startswith(f"logger={package} needs the {package} package")
    assert str(caught.value).endswith('pip install -e ".[tracking]"')
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_the_lab_runs_without_the_tracking_packages(data_dir, tmp_path, monkeypatch):
    hide = tmp_path / "hide"
    hide.mkdir()
    # Imported by Python at start-up, before train.py: the packages cannot be imported.
    (hide / "sitecustomize.py").write_text(
        "import sys\n\nsys.modules.update(mlflow=None, wandb=None)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(hide))
    refused = run_train(*FAST, "logger=mlflow", data_dir=data_dir, log_dir=tmp_path / "refused")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "Traceback" not in output
    assert "error: logger=mlflow needs the mlflow package" in output
    assert not (tmp_path / "refused").exists()  # checked before the run's folder is made
    plain = run_train(*FAST, data_dir=data_dir, log_dir=tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]


# --- MLflow -------------------------------------------------------------------------------------


def mlflow_client(log_dir: Path):
    """MLflow's client of the store conf/logger/mlflow.yaml keeps under ``paths.log_dir``."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{log_dir}/mlflow.db")


def mlflow_runs(log_dir: Path, run_dir: Path) -> list:
    """The MLflow runs of one run folder, oldest first."""
    client = mlflow_client(log_dir)
    experiment = client.get_experiment_by_name("train")
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.run_dir = '{run_dir}'",
        order_by=["attributes.start_time ASC"],
    )


def mlflow_history(log_dir: Path, run, key: str) -> dict[int, float]:
    """step: value of one metric of an MLflow run."""
    history = mlflow_client(log_dir).get_metric_history(run.info.run_id, key)
    return {m.step: m.value for m in history}


@needs_mlflow
@pytest.mark.slow
def test_mlflow_run_holds_the_metrics_params_and_test_images_tensorboard_got(
    train_cfg, tmp_path, offline
):
    logs = tmp_path / "logs"
    cfg = train_cfg(f"paths.log_dir={logs}", "logger=[tensorboard,mlflow]")
    metrics = train(cfg)
    (found,) = mlflow_runs(logs, tmp_path)
    assert found.info.status == "FINISHED"
    assert found.data.params == {key: str(value) for key, value in hparams_of(cfg).items()}
    tensorboard = scalars(tmp_path)
    for key in ("train/loss", "val/acc", "test/acc", "test/f1_macro"):
        assert mlflow_history(logs, found, key) == pytest.approx(dict(tensorboard[key]))
    per_class = [key for key in tensorboard if key.startswith("test/acc_per_class/")]
    assert len(per_class) == cfg.data.num_classes
    assert {k: found.data.metrics[k] for k in per_class} == {
        k: pytest.approx(tensorboard[k][-1][1]) for k in per_class
    }
    assert found.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])

    run_id, downloaded = found.info.run_id, str(tmp_path / "downloaded")
    files = Path(mlflow_client(logs).download_artifacts(run_id, "test", downloaded))
    for tag in IMAGES:
        pixels = picture(files / f"{tag.split('/')[-1]}.png")
        assert drawn(pixels) and (pixels == tensorboard_image(tmp_path, tag)).all()
    table = (files / "acc_per_class.md").read_text().splitlines()
    assert table[0] == "| " + " | ".join(ACCURACY_COLUMNS) + " |"
    assert len(table) == 2 + cfg.data.num_classes  # header, rule, a row per class


@needs_mlflow
@pytest.mark.slow
def test_a_resumed_run_logs_on_into_the_mlflow_run_of_its_folder(
    train_cfg, tmp_path, offline, caplog
):
    logs = tmp_path / "logs"
    settings = [f"paths.log_dir={logs}", "logger=[tensorboard,mlflow]", "trainer.max_epochs=2"]
    train(train_cfg(*settings, "trainer.max_epochs=1"))
    (first,) = mlflow_runs(logs, tmp_path)
    one_epoch = mlflow_history(logs, first, "val/acc")
    # resumed with a changed override: MLflow keeps the param the run started with, and says so
    resumed = train_cfg(
        *settings, "optimizer.lr=0.002", f"ckpt_path={tmp_path / 'checkpoints' / 'last.ckpt'}"
    )
    with caplog.at_level("WARNING"):
        train(resumed)
    (run,) = mlflow_runs(logs, tmp_path)
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    both = mlflow_history(logs, run, "val/acc")
    assert len(one_epoch) == 1 and len(both) == 2 and min(both) in one_epoch
    assert both == pytest.approx(dict(scalars(tmp_path)["val/acc"]))
    assert run.data.params["optimizer/lr"] == str(first.data.params["optimizer/lr"])
    messages = [r.getMessage() for r in caplog.records]
    kept = [m for m in messages if "keeps the values it started" in m]
    assert len(kept) == 1 and "optimizer/lr" in kept[0]


@needs_mlflow
@pytest.mark.slow
def test_a_sweep_creates_its_mlflow_store_once_before_its_jobs(tmp_path, offline):
    # Parallel jobs (hydra/launcher=joblib) that each created the database raced through MLflow's
    # table migrations, and all but one failed.
    config = compose_train(["logger=[tensorboard,mlflow]", f"paths.log_dir={tmp_path}"])
    ValidateBeforeRun().on_multirun_start(config)
    experiment = mlflow_client(tmp_path).get_experiment_by_name("train")
    assert experiment.artifact_location.endswith(str(tmp_path / "mlartifacts"))


# --- Weights & Biases, offline ------------------------------------------------------------------


def wandb_inspect(run_folder: Path, summary: bool = False) -> dict | list[dict]:
    """An offline W&B run as wandb's own reader of its .wandb file prints it (`wandb leet
    inspect`): with ``summary`` one object (config, summary, state), else the records."""
    result = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
        + (["--summary"] if summary else [])
        + [str(run_folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    if summary:
        return json.loads(result.stdout)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


@needs_wandb
@pytest.mark.slow
def test_wandb_offline_run_holds_the_metrics_config_and_test_images_tensorboard_got(
    train_cfg, tmp_path, offline
):
    cfg = train_cfg("logger=[tensorboard,wandb]")
    metrics = train(cfg)
    (folder,) = (tmp_path / "wandb").glob("offline-run-*")
    found = wandb_inspect(folder, summary=True)
    assert found["state"] == "finished" and found["exit_code"] == 0
    assert found["config"] == hparams_of(cfg)
    assert found["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
    tensorboard = scalars(tmp_path)
    history = [r["history"]["item"] for r in wandb_inspect(folder) if r["type"] == "history"]
    for key in ("train/loss", "val/acc", "test/acc", "test/f1_macro"):
        logged = {item["trainer/global_step"]: item[key] for item in history if key in item}
        assert logged == pytest.approx(dict(tensorboard[key]))
    for tag in IMAGES:
        (name,) = found["summary"][tag]["filenames"]
        pixels = picture(folder / "files" / name)
        assert drawn(pixels) and (pixels == tensorboard_image(tmp_path, tag)).all()
    table = json.loads(
        (folder / "files" / found["summary"]["test/acc_per_class"]["path"]).read_text()
    )
    assert table["columns"] == list(ACCURACY_COLUMNS)
    assert len(table["data"]) == cfg.data.num_classes


@needs_wandb
@pytest.mark.slow
def test_each_job_of_a_process_gets_its_own_wandb_run_even_after_a_failed_one(
    train_cfg, tmp_path, offline
):
    # A sweep's jobs run one after another in one process (Hydra's basic launcher).
    failed, ok = tmp_path / "failed", tmp_path / "ok"
    assert run(train_cfg(*NAN_AT, "logger=wandb", f"paths.output_dir={failed}")) is None
    run(train_cfg("logger=wandb", f"paths.output_dir={ok}"))
    (first,), (second,) = ((d / "wandb").glob("offline-run-*") for d in (failed, ok))
    first, second = wandb_inspect(first, summary=True), wandb_inspect(second, summary=True)
    assert first["run_id"] != second["run_id"]
    assert (first["exit_code"], second["exit_code"]) == (1, 0)
    assert "test/acc" in second["summary"] and "test/acc" not in first["summary"]
