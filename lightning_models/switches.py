"""Averaging the weights, as timm and torchvision's references do (``--model-ema``) and as
``torch.optim.swa_utils`` does: Lightning's callbacks, with the lab's checks of their values and
the two places where they would not do what a user of the lab expects.

- :class:`EMA` (``conf/callbacks/ema.yaml``): Lightning's ``EMAWeightAveraging``. Validation runs
  on the average, and every checkpoint's ``state_dict`` holds the average (the weights being
  trained are kept beside it as ``current_model_state``, for resuming): the best checkpoint by
  val/acc, the test of train.py, predict and export all use the averaged weights.
- :class:`SWA` (``conf/callbacks/swa.yaml``): Lightning's ``StochasticWeightAveraging``. From
  ``swa_epoch_start`` on, the learning rate is annealed to ``swa_lrs`` (``SWALR``) and the
  weights are averaged once per epoch; the average replaces the weights when the fit ends (after
  one more pass over the training images to recompute BatchNorm statistics). Validation during
  the fit sees the weights being trained, so the epoch checkpoints are not averaged: the
  averaged model is written as ``checkpoints/swa.ckpt``, and that is the checkpoint train.py
  tests (:func:`lightning_models.checkpoints.checkpoint_to_test`).

Combinations that cannot work (both at once, SWA with early stopping) are refused before the
run by :func:`lightning_models.checks.check_run_parts`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from lightning_models.checks import LabError, check_int, is_fraction, is_number, is_whole

log = logging.getLogger("switches")

SWA_FILE = "swa.ckpt"

# WeightAveraging warns that it cannot shard a model whose configure_model is overridden; the
# lab's configure_model only compiles the net in place (model.compile), nothing is sharded.
warnings.filterwarnings(
    "ignore", message=r"You're using the WeightAveraging callback with a model that overrides"
)


class EMA(EMAWeightAveraging):
    """``EMAWeightAveraging`` whose values are checked, and whose average is what is tested.

    Args:
        decay: weight of the average at each update, strictly between 0 and 1 (0.999: the
            average spans about the last 1000 updates).
        update_every_n_steps: update the average every this many optimizer steps.
        update_starting_at_step: the first optimizer step (0-based) that updates it; None: 0.
    """

    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not is_fraction(decay):
            raise LabError(
                f"callbacks.ema.decay={decay!r} is not allowed; use a number strictly between 0 "
                "and 1, such as 0.999 (the average then spans about the last 1000 steps)"
            )
        check_int("callbacks.ema.update_every_n_steps", update_every_n_steps, 1)
        if update_starting_at_step is not None:
            check_int("callbacks.ema.update_starting_at_step", update_starting_at_step, 0)
        super().__init__(
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            **kwargs,
        )

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning restores the callbacks for a test as well, and after a fit this callback
        # still holds its average: it would then load `current_model_state` (the weights being
        # trained) into the model to test. Outside a fit the checkpoint's state_dict, the
        # average, is what is evaluated; a fit resumes both as Lightning does.
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class SWA(StochasticWeightAveraging):
    """``StochasticWeightAveraging`` whose values are checked, and which writes the averaged model
    as ``<dirpath>/swa.ckpt`` when the fit ends (:attr:`averaged_checkpoint`).

    Args:
        swa_lrs: the learning rate of the averaging epochs (one number, or one per param group).
        swa_epoch_start: the first averaging epoch: a whole number of at least 1, or a fraction
            of ``trainer.max_epochs``.
        annealing_epochs: epochs over which the learning rate goes to ``swa_lrs``.
        annealing_strategy: ``cos`` or ``linear``.
        dirpath: the run's checkpoint folder.
    """

    def __init__(
        self,
        swa_lrs: float | list[float],
        dirpath: str,
        swa_epoch_start: int | float = 0.8,
        annealing_epochs: int = 1,
        annealing_strategy: str = "cos",
        **kwargs: Any,
    ) -> None:
        lrs = list(swa_lrs) if isinstance(swa_lrs, list | tuple) else [swa_lrs]
        if not lrs or not all(is_number(lr) and lr > 0 for lr in lrs):
            raise LabError(
                f"callbacks.swa.swa_lrs={swa_lrs!r} is not allowed; use a positive number (or one "
                "per parameter group), such as the optimizer's lr"
            )
        if not (
            (is_whole(swa_epoch_start) and swa_epoch_start >= 1)
            or (isinstance(swa_epoch_start, float) and 0 < swa_epoch_start <= 1)
        ):
            raise LabError(
                f"callbacks.swa.swa_epoch_start={swa_epoch_start!r} is not allowed; use an epoch "
                "(a whole number of at least 1) or a fraction of trainer.max_epochs such as 0.8"
            )
        check_int("callbacks.swa.annealing_epochs", annealing_epochs, 0)
        if annealing_strategy not in ("cos", "linear"):
            raise LabError(
                f"callbacks.swa.annealing_strategy={annealing_strategy!r} is not allowed; use cos "
                "or linear"
            )
        # Lightning wants floats (a YAML `1` is an int).
        lrs = [float(lr) for lr in lrs]
        super().__init__(
            swa_lrs=lrs if isinstance(swa_lrs, list | tuple) else lrs[0],
            swa_epoch_start=swa_epoch_start,
            annealing_epochs=annealing_epochs,
            annealing_strategy=annealing_strategy,
            **kwargs,
        )
        self.epoch_start = swa_epoch_start
        self.dirpath = Path(dirpath)
        self.averaged_checkpoint: Path | None = None
        self.planned_epochs: int = -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Before Lightning adds its BatchNorm-update epoch to the fit loop: the epochs asked for.
        self.planned_epochs = trainer.max_epochs
        super().on_fit_start(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        # Lightning puts the average into the model only when the fit reaches its last epoch
        # (the current epoch has been counted up by now; one more with BatchNorm).
        last = self.planned_epochs - 1  # 0-based
        finished = self.planned_epochs == -1 or trainer.current_epoch > last
        if not (finished and self.n_averaged is not None and int(self.n_averaged) > 0):
            log.warning(
                "SWA: the fit stopped after %d of its %d epochs, before the average replaces the "
                "weights: no %s is written, and the best checkpoint is tested",
                trainer.current_epoch,
                self.planned_epochs,
                SWA_FILE,
            )
            return
        path = self.dirpath / SWA_FILE
        trainer.save_checkpoint(path)
        self.averaged_checkpoint = path
        log.info("SWA: the averaged model of %d epochs is %s", int(self.n_averaged), path)
