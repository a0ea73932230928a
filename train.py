"""Train, then test, one image classifier as composed by Hydra from ``conf/``.

    python train.py model=lenet5_modified data=fashion trainer.max_epochs=20
    python train.py -m optimizer.lr=1e-1,1e-2,1e-3
    python train.py trainer=ddp_cpu                      # one run on 2 processes (DDP)

compose (Hydra) → build (lightning_models/build.py: everything the run needs, once; the pre-run
check built it already) → fit → test → report (lightning_models/report.py). The returned value
is the ``optimized_metric`` for sweepers. How the run's config differs from the composed one
(test only, resumed, no validation, bar off) is lightning_models/run_config.py; DDP processes on
one machine are started by lightning_models/ddp.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import hydra
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

import datamodules  # noqa: F401  (registers the config resolvers the data configs use)
from lightning_models import console, ddp, report
from lightning_models.build import Run, build_run, prebuilt
from lightning_models.checkpoints import checkpoint_to_test, finished_metrics

log = logging.getLogger("train")


def fit_and_test(run: Run) -> dict[str, Any]:
    """Fit and test as ``run.cfg`` says; return the final metrics (``val/…`` and ``test/…``)."""
    cfg, trainer, model, data = run.cfg, run.trainer, run.model, run.datamodule
    if cfg.get("print_config"):
        console.print_config_tree(cfg, cfg.paths.output_dir)
    report.log_hparams(run.loggers, cfg)
    started = time.perf_counter()
    metrics: dict[str, Any] = {}
    if cfg.get("train"):
        trainer.fit(model, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
        metrics.update(report.floats(trainer.callback_metrics))
    if cfg.get("test"):
        trainer.test(model, datamodule=data, ckpt_path=checkpoint_to_test(trainer, cfg))
        metrics.update(report.floats(trainer.callback_metrics))
    metrics["time/total_s"] = time.perf_counter() - started
    metrics["epochs"] = trainer.current_epoch
    metrics["status"] = "diverged" if report.collapsed(model) else "ok"
    report.finish(trainer, run.loggers, cfg, metrics)
    return metrics


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build the run of ``cfg`` (or take the one the pre-run check built), fit and test it."""
    return fit_and_test(prebuilt(cfg) or build_run(cfg))


def run(cfg: DictConfig, launch: bool = False) -> float | None:
    """Train as ``cfg`` says and return :func:`report.objective`; with ``launch``, on the DDP
    processes the run needs. Whatever happens, the job leaves its status in metrics.json."""
    if rank_zero_only.rank > 0:  # a DDP process of rank > 0 logs warnings only
        logging.getLogger().setLevel(logging.WARNING)
    done = finished_metrics(cfg)
    if done is not None:
        log.info("existing_run=continue: %s finished already; not run again", cfg.paths.output_dir)
        return report.objective(done, cfg)
    try:
        job = prebuilt(cfg) or build_run(cfg)
        processes = ddp.processes_to_start(job.trainer) if launch else 0
        if processes:
            return ddp.start_processes(cfg, processes, entry="train:run")
        metrics = fit_and_test(job)
    except Exception as err:  # noqa: BLE001 - every job leaves its status for the sweep table
        report.job_failed(err, cfg)
        return None
    return report.objective(metrics, cfg)


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run(cfg, launch=True)


if __name__ == "__main__":
    main()
