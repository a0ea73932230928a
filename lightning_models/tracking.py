"""MLflow and Weights & Biases beside TensorBoard: ``logger=mlflow``, ``logger=wandb``, or several
loggers at once, ``logger=[tensorboard,mlflow]``. Both are the optional extra ``tracking``
(``pip install -e ".[tracking]"``).

Lightning's own MLFlowLogger and WandbLogger take the metrics a run logs, and
:func:`lightning_models.report.log_hparams` its hyperparameters, as TensorBoard does. This module
adds what they do not get by themselves:

- the test results of :class:`lightning_models.callbacks.TestFigures`: the confusion matrix and
  the image grids (MLflow: PNG artifacts under ``test/``; W&B: images in the run's media), the
  per-class accuracies and macro F1 as metrics, the per-class table (MLflow:
  ``test/acc_per_class.md``; W&B: a table);
- the end of the job's W&B run with the job, ok or failed: Lightning's WandbLogger joins any W&B
  run still open in the process, so the next job of an in-process sweep would log into this one;
- the summary lines that say where to look;
- a sweep's MLflow store and experiment, created once before its jobs start: jobs run in
  parallel (``hydra/launcher=joblib``) that each created the database would race through
  MLflow's table migrations, and all but one would fail.

Neither package is imported unless such a logger is configured: the lab runs without them, and
:func:`lightning_models.checks.check_logger_packages` turns a missing one into one sentence before
anything is built.

Resume: a resumed run (``ckpt_path=last``, a requeued job) logs on into the MLflow run that its
folder logged into before (found by its ``run_dir`` tag, :func:`continue_mlflow_runs`), its steps
continuing from the checkpoint's, so one run folder stays one MLflow run. MLflow keeps a param's
first value: a resumed run with a changed override keeps the values the run started with, and
says so (:func:`hparams_to_log`). What the stopped process logged after its last checkpoint stays
in the MLflow run's history beside the values logged again for those steps, as MLflow cannot take
points back (TensorBoard and CSV drop them: ``purge_step``, lightning_models/run_config.py). W&B
runs are offline by default, and an offline W&B run cannot be resumed: a resumed run is a new W&B
run, its steps continuing from the checkpoint's.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from omegaconf import DictConfig

from lightning_models.checks import builds

log = logging.getLogger("tracking")


@dataclass
class Table:
    """A table for every store: its columns and rows (W&B), and as markdown (MLflow's text)."""

    columns: Sequence[str]
    rows: list[list[Any]]
    markdown: str


def tracking_loggers(loggers: Iterable[Any]) -> list[MLFlowLogger | WandbLogger]:
    return [lg for lg in loggers if isinstance(lg, MLFlowLogger | WandbLogger)]


def log_test_results(
    logger: MLFlowLogger | WandbLogger,
    step: int,
    pictures: dict[str, np.ndarray],
    scalars: dict[str, float],
    tables: dict[str, Table],
) -> None:
    """The test figures to one MLflow or W&B logger: ``pictures`` (tag: H x W x 3 uint8),
    ``scalars`` (tag: value) and ``tables`` (tag: table), at the run's last step."""
    logger.log_metrics(scalars, step)
    if isinstance(logger, MLFlowLogger):
        client, run_id = logger.experiment, logger.run_id
        for tag, picture in pictures.items():
            client.log_image(run_id, picture, artifact_file=f"{tag}.png")
        for tag, table in tables.items():
            client.log_text(run_id, table.markdown, f"{tag}.md")
    else:
        for tag, picture in pictures.items():
            logger.log_image(key=tag, images=[picture], step=step)
        for tag, table in tables.items():
            logger.log_text(key=tag, columns=list(table.columns), data=table.rows, step=step)


def where_to_look(loggers: Iterable[Any]) -> list[str]:
    """Summary lines: how to open each MLflow and W&B run (rank zero: it reads the runs)."""
    lines = []
    for logger in tracking_loggers(loggers):
        if isinstance(logger, MLFlowLogger):
            ui = f"mlflow ui --backend-store-uri {logger.experiment.tracking_uri}"
            lines.append(f"{'mlflow':<14} {ui} (run {logger.run_id})")
            continue
        run = logger.experiment
        if run.offline:
            lines.append(f"{'wandb':<14} wandb sync {Path(run.dir).parent}")
        elif run.url:
            lines.append(f"{'wandb':<14} {run.url}")
    return lines


def end_wandb_run(failed: bool) -> None:
    """Finish the process's open W&B run, if any (module docstring). wandb is only looked up
    where a logger imported it, so a run without it never loads it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)


def continue_mlflow_runs(logger_nodes: Iterable[Any], run_dir: str) -> None:
    """Point each MLflow logger config of a resumed run at the newest MLflow run tagged with its
    folder (module docstring), unless it names a ``run_id`` itself. Where the store cannot be read
    the resumed run is a new MLflow run, as it would be without this, and the log says why."""
    for node in logger_nodes:
        if not builds(node, MLFlowLogger) or node.get("run_id"):
            continue
        if importlib.util.find_spec("mlflow") is None:  # checks.py stops the run with a sentence
            continue
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(str(node.tracking_uri))
            experiment = client.get_experiment_by_name(str(node.experiment_name))
            runs = [] if experiment is None else client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.run_dir = '{run_dir}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )  # fmt: skip
        except Exception as err:  # noqa: BLE001 (see the docstring)
            log.warning("resume: a new MLflow run, the store could not be searched: %s", err)
            continue
        if runs:
            node.run_id = runs[0].info.run_id
            log.info("resume: logging on into MLflow run %s", node.run_id)


def hparams_to_log(logger: Any, hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters ``logger`` can take: all of them, except for an MLflow run that has
    params already (a resumed run), which takes only new ones, since MLflow refuses to change a
    param's value; a changed value is kept as it was, with a warning naming it."""
    if not isinstance(logger, MLFlowLogger):
        return hparams
    logged = logger.experiment.get_run(logger.run_id).data.params
    changed = sorted(k for k, v in hparams.items() if k in logged and logged[k] != str(v))
    if changed:
        log.warning(
            "MLflow run %s keeps the values it started with for %s (MLflow cannot change a "
            "param); the resumed run's own values are in its .hydra/config.yaml",
            logger.run_id,
            ", ".join(changed),
        )
    return {k: v for k, v in hparams.items() if k not in logged}


def prepare_mlflow_stores(config: DictConfig) -> None:
    """Create the MLflow store and experiment of each MLflow logger of a sweep, in the process
    that launches its jobs (module docstring). Never raises: a job whose logger cannot be built
    says so in its own status, as without this step."""
    for name, node in (config.get("logger") or {}).items():
        if not builds(node, MLFlowLogger) or importlib.util.find_spec("mlflow") is None:
            continue
        try:
            from mlflow.tracking import MlflowClient

            client = MlflowClient(str(node.tracking_uri))
            experiment = str(node.experiment_name)
            if client.get_experiment_by_name(experiment) is None:
                client.create_experiment(experiment, node.get("artifact_location"))
        except Exception as err:  # noqa: BLE001 (see the docstring)
            log.warning("logger.%s: the MLflow store is left to the jobs: %s", name, err)
