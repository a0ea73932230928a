"""Lightning's CSV logger, made to continue a resumed run (``logger=csv``, ``logger=many``).

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so a run resumed in
its own folder (``ckpt_path=last``, a requeued job) lost every row written before the resume.
Here a resumed run keeps the rows of the steps before its checkpoint's and drops the later ones,
which the stopped process logged after that checkpoint and the resumed run logs again: the same
rule as TensorBoard's ``purge_step``, which lightning_models/run_config.py sets for both. The
rows also reach the file whenever a checkpoint is written (Lightning writes them every
``flush_logs_every_n_steps`` steps): a process killed after a checkpoint has everything logged
before it on disk.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that keeps a resumed run's rows (see module).

    ``purge_step``: the global step of the checkpoint a resumed run starts from; rows of this
    step and later are dropped from the existing ``metrics.csv``. ``None``: a new run.
    """

    def __init__(self, *args: Any, purge_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.purge_step = purge_step
        # The rows are read before Lightning's writer first starts (and deletes the file).
        self._rows_to_keep_pending = purge_step is not None

    @property
    @rank_zero_experiment
    def experiment(self):
        if not self._rows_to_keep_pending:
            return super().experiment
        self._rows_to_keep_pending = False
        path = Path(self.log_dir) / "metrics.csv"
        if not path.is_file():
            return super().experiment
        with path.open(newline="") as file:
            kept = [row for row in csv.DictReader(file) if int(row["step"]) < self.purge_step]
        # Out of the writer's way (it deletes metrics.csv) until the kept rows are written back:
        # a crash in between leaves them on disk under this name.
        aside = path.with_name(path.name + ".before-resume")
        path.replace(aside)
        writer = super().experiment
        writer.metrics = kept
        writer.save()
        aside.unlink()
        return writer

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        super().after_save_checkpoint(checkpoint_callback)
        self.save()
