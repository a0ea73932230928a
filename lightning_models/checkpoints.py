"""Checkpoints, exact resume and requeue: where a run's checkpoints are, which one a run resumes
or tests, and what makes a resumed run continue exactly where the stopped one was.

A run's folder (Hydra's ``paths.output_dir``) holds ``.hydra/`` (its composed config and
overrides) and ``checkpoints/`` (``epoch_NNN.ckpt``, the best by val/acc; ``last.ckpt``, the
latest state): :func:`run_dir_of` and :func:`last_checkpoint_in` are the one place that layout is
spelled out.

Lightning restores weights, optimizer, scheduler, loop counters and the train loader's position
from a checkpoint, but not the random number generators: a resumed run would draw other dropout
masks than the run it continues. :class:`RNGState` saves torch (CPU and CUDA), numpy and Python
``random`` states in every checkpoint and puts them back when training starts again.
:class:`StepCheckpoint` writes ``last.ckpt`` every N steps, never on a batch a validation follows.

Which checkpoint a run resumes (:func:`checkpoint_to_resume`): ``ckpt_path=<file>``;
``ckpt_path=last``, the newest run of this command (the same overrides apart from
``ckpt_path``) that has a ``last.ckpt``; a job submitit requeued, or one started again with
``existing_run=continue``, its own ``last.ckpt``. :func:`check_resumable` compares that
checkpoint with the model about to be trained. :class:`RequeueBetweenBatches` lets a job that
submitit preempts stop only between batches.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from lightning_models.checks import LabError, reported_as

log = logging.getLogger("checkpoints")

LAST = "last"  # the value of ckpt_path that means "the newest checkpoint of this command's run"
LAST_FILE = "last.ckpt"  # written by conf/callbacks/last_checkpoint.yaml and step_checkpoint.yaml


class RNGState(L.Callback):
    """Saves the global RNG states in checkpoints and restores them when a resumed fit starts.

    The states are taken when a checkpoint is written (``state_dict`` is asked then), so they are
    those the uninterrupted run goes on with. They are applied in ``on_train_start``, after
    Lightning has set up the loaders and run its sanity check (which isolates the RNG anyway), so
    nothing drawn during setup can shift them.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state(),
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        _set_numpy_state(state["numpy"])
        random.setstate(state["python"])
        cuda = state.get("cuda")
        if cuda is not None and torch.cuda.is_available():
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda)
            else:  # another machine: the CPU states still hold, the GPU draws cannot be the same
                log.warning("The checkpoint's CUDA RNG states are for another GPU count: skipped.")


def _numpy_state() -> dict[str, Any]:
    """numpy's state as tensors and plain numbers: checkpoints must stay readable with
    ``torch.load(weights_only=True)``, which refuses numpy arrays."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def _set_numpy_state(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["gauss"]))


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint(every_n_train_steps=N)`` that skips the batches a validation follows
    (the epoch's last, or every ``val_check_interval``).

    Lightning resumes a checkpoint written on such a batch as if its validation and the end of
    its epoch had happened: a run killed during that validation would lose the epoch's
    ``val/*`` and its chance to become the best checkpoint. Skipped there, ``last.ckpt`` stays
    the earlier one, and the resumed run repeats up to N-1 batches and the validation.
    """

    @functools.cached_property
    def state_key(self) -> str:
        # Lightning reads every callback's state_key for each of its six hook calls a training
        # step; ModelCheckpoint's builds it anew from its settings each time (about 2 us), which
        # are fixed once it is constructed. The key is the same string, so checkpoints match.
        return super().state_key

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:  # fmt: skip
        if not _validation_follows(trainer, batch_idx):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def _validation_follows(trainer: L.Trainer, batch_idx: int) -> bool:
    done = batch_idx + 1
    if done >= trainer.num_training_batches:
        return True
    every = trainer.val_check_batch
    return isinstance(every, int) and every > 0 and done % every == 0


class RequeueBetweenBatches(L.Callback):
    """Acts on a preemption or time-out signal at the next batch boundary instead of wherever it
    lands (submitit: ``hydra/launcher=submitit_local`` or ``slurm``).

    submitit's handler for the signal requeues the job and exits at once, from whatever line was
    running. Lightning writes an epoch's checkpoints in ``on_train_epoch_end`` and hands the
    epoch's train metrics to the loggers only after that hook; an exit in between leaves a
    last.ckpt that says the epoch is done and no ``train/*`` point for it, and the requeued job
    resumes after that epoch, so the point is never written (seen in CI: one epoch missing from
    a resumed job's curve; tests/test_scale_out.py sends the signal at exactly that moment). So
    during the fit the signal is only noted, and the handler runs at the start of the next
    training or validation batch, or when the fit ends: at most one batch later, where
    everything logged agrees with last.ckpt. Outside the fit (setup, test) submitit's handler
    acts at once, as before.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self._handler: Callable[[int, object], object] | None = None
        self._sigterm: Callable[[int, object], object] | None = None
        self._received = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        handler = signal.getsignal(self.signum)
        # A Python handler only (a DDP process started by the lab has the default), and only the
        # main thread may set one.
        if callable(handler) and threading.current_thread() is threading.main_thread():
            self._handler = handler
            signal.signal(self.signum, self._note)
            sigterm = signal.getsignal(signal.SIGTERM)
            self._sigterm = sigterm if callable(sigterm) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # SLURM sends SIGTERM first when it preempts a job, then submitit's signal; submitit
        # bypasses the SIGTERM and requeues on its own signal. Lightning, which sets its SIGTERM
        # handler after on_fit_start, would instead end the fit at the next batch (its
        # SIGTERMException) before submitit's signal arrives, and the job would fail instead
        # of being requeued: submitit's handler is put back for the fit (Lightning restores the
        # handlers it replaced when the fit ends).
        if self._sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._sigterm)

    def _note(self, signum: int, frame: object) -> None:
        log.warning("Signal %s received: acted on at the next batch boundary", signum)
        self._received = True

    def _act_if_received(self) -> None:
        if self._received:
            self._received = False
            handler = self._restore()
            if handler is None:
                return
            try:
                handler(self.signum, None)  # submitit's: requeues, then exits
            except subprocess.CalledProcessError as err:
                # SLURM, requeuing the job, sends SIGTERM to all its processes, and that can
                # reach `scontrol requeue` before it exits: the requeue is done, the job must
                # end as submitit ends it (an exit, not a failure, which would be recorded).
                if err.returncode < 0 and "requeue" in [str(a) for a in err.cmd]:
                    log.warning("Requeued by SLURM (scontrol was ended by its SIGTERM); exiting")
                    sys.exit(-1)
                raise

    def _restore(self) -> Callable[[int, object], object] | None:
        handler, self._handler = self._handler, None
        if handler is not None:
            signal.signal(self.signum, handler)
        return handler

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._act_if_received()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx,
                                  dataloader_idx=0) -> None:  # fmt: skip
        self._act_if_received()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._act_if_received()
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:  # fmt: skip
        self._restore()


# --- a run's folder --------------------------------------------------------------------------


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def last_checkpoint_in(run_dir: Path) -> Path:
    return checkpoints_dir(run_dir) / LAST_FILE


def run_folder_of(ckpt: Path) -> Path:
    """Where the run folder of a checkpoint is, ``<run>`` of ``<run>/checkpoints/x.ckpt``
    (whether or not the checkpoint lies in one)."""
    return Path(ckpt).expanduser().resolve().parent.parent


def run_dir_of(ckpt: Path) -> Path | None:
    """The run folder a checkpoint belongs to, or None when it does not lie in one."""
    run = run_folder_of(ckpt)
    return run if (run / ".hydra").is_dir() else None


def saved_config_of(ckpt: Path) -> Path:
    """Where the composed config of the checkpoint's run is (whether or not it is there)."""
    return run_folder_of(ckpt) / ".hydra" / "config.yaml"


# --- which checkpoint ------------------------------------------------------------------------


def _without_ckpt_path(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "ckpt_path"]


def _saved_overrides(run_dir: Path) -> list[str] | None:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    return list(yaml.safe_load(path.read_text()) or [])


def find_last_checkpoint(runs_dir: Path, overrides: Sequence[str]) -> Path:
    """``<run>/checkpoints/last.ckpt`` of the newest run under ``runs_dir`` started with the same
    ``overrides`` (``ckpt_path`` aside, so a resume of a resume finds the same run).

    Newest means the most recently written ``last.ckpt``: run folders are named by start time,
    but a resumed run keeps writing into its old folder.
    """
    wanted = _without_ckpt_path(overrides)
    found = []
    if runs_dir.is_dir():
        for run in runs_dir.iterdir():
            last = last_checkpoint_in(run)
            saved = _saved_overrides(run)
            if last.is_file() and saved is not None and _without_ckpt_path(saved) == wanted:
                found.append(last)
    if not found:
        shown = " ".join(wanted) or "no overrides"
        raise LabError(
            f"ckpt_path=last found nothing to resume: no run under {runs_dir} started with the "
            f"same overrides ({shown}) has a checkpoints/{LAST_FILE}"
        )
    return max(found, key=lambda p: p.stat().st_mtime_ns)


def under_submitit() -> bool:
    return "SUBMITIT_FOLDER" in os.environ


def checkpoint_to_resume(cfg: DictConfig) -> Path | None:
    """The checkpoint this fit resumes, or None for a fresh one.

    - ``ckpt_path=<file>``: that file; ``ckpt_path=last``: :func:`find_last_checkpoint` over
      this command's runs (the overrides of this invocation, ``ckpt_path`` aside).
    - A job submitit runs again after a preemption or a time-out (``hydra/launcher=slurm``):
      its own ``checkpoints/last.ckpt``. submitit resubmits it with the same overrides and
      number, so it runs again in the same folder, and a last.ckpt found there is its own,
      written before it was stopped. A fresh job's folder never holds one.
    - ``existing_run=continue`` does the same outside submitit, for jobs started again in a fixed
      folder (``hydra.sweep.dir=...``, as ``lightning_models.tools.reproduce`` does).
    """
    if not cfg.get("train"):
        return None
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and str(ckpt) != LAST:
        return Path(str(ckpt)).expanduser()
    if ckpt is not None:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        return find_last_checkpoint(Path(cfg.paths.log_dir) / cfg.task_name / "runs", overrides)
    if under_submitit() or cfg.get("existing_run") == "continue":
        last = last_checkpoint_in(Path(cfg.paths.output_dir))
        if last.is_file():
            who = "Requeued job" if under_submitit() else "existing_run=continue"
            log.warning("%s: resuming from its own %s", who, last)
            return last
    return None


def finished_metrics(cfg: DictConfig) -> dict[str, Any] | None:
    """With ``existing_run=continue``, the metrics of a run that already finished in this job's
    folder (status ok or diverged; a failed one runs again), else None."""
    if cfg.get("existing_run") != "continue" or not cfg.get("train"):
        return None
    path = Path(cfg.paths.output_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if metrics.get("status") in ("ok", "diverged") else None


def checkpoint_to_test(trainer: L.Trainer, cfg: DictConfig) -> str | None:
    """The best checkpoint of this fit; else ``ckpt_path`` (test only); else None (in memory).

    With SWA the fit's product is the averaged model, which no epoch's checkpoint holds (their
    val/acc are of the weights being trained): the checkpoint SWA wrote when the fit ended
    (``averaged_checkpoint``, lightning_models/switches.py) is tested instead.
    """
    averaged = [getattr(c, "averaged_checkpoint", None) for c in trainer.callbacks]
    if cfg.get("train") and any(averaged):
        return str(next(path for path in averaged if path))
    ckpt = trainer.checkpoint_callback
    if cfg.get("train") and ckpt is not None and ckpt.best_model_path:
        return ckpt.best_model_path
    if not cfg.get("train") and cfg.get("ckpt_path"):
        return cfg.ckpt_path
    log.warning("No checkpoint to test: testing the weights in memory.")
    return None


def requeue_signal() -> int:
    """The signal submitit's job handles as "preempted or timed out" (SIGUSR2 unless the
    SUBMITIT_PREEMPT_SIGNAL environment variable names another)."""
    from submitit import JobEnvironment

    return getattr(signal, f"SIG{JobEnvironment.USR_SIG}")


# --- is the checkpoint this model's? ---------------------------------------------------------


def load_checkpoint(ckpt: Path) -> dict[str, Any]:
    """The checkpoint's contents; a file torch cannot read (a copy cut short, a full disk) is
    a LabError naming it, with torch's message."""
    fix = "give a whole checkpoint of a run (a copy cut short or a full disk leaves a damaged one)"
    with reported_as(f"ckpt_path={ckpt}", fix):
        return torch.load(ckpt, map_location="cpu", weights_only=True)


def check_resumable(checkpoint: dict[str, Any], model: L.LightningModule, ckpt: Path) -> None:
    """A LabError when the checkpoint's weights do not fit ``model`` (another architecture)."""
    saved = {k: tuple(v.shape) for k, v in checkpoint.get("state_dict", {}).items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if saved == ours:
        return
    differences = [f"{k} missing in the checkpoint" for k in sorted(ours.keys() - saved.keys())]
    differences += [f"{k} not in this model" for k in sorted(saved.keys() - ours.keys())]
    differences += [
        f"{k} is {list(saved[k])} in the checkpoint, {list(ours[k])} here"
        for k in sorted(ours.keys() & saved.keys())
        if saved[k] != ours[k]
    ]
    more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
    ours_name = type(getattr(model, "net", model)).__name__
    raise LabError(
        f"ckpt_path={ckpt} was trained with model {_model_name_of(ckpt)}, which does not fit this "
        f"run's {ours_name} ({'; '.join(differences[:3])}{more}); "
        "resume with the overrides of the run that wrote it"
    )


def _model_name_of(ckpt: Path) -> str:
    """The net's class in the config of the checkpoint's run, else 'another model'."""
    config = saved_config_of(ckpt)
    if not config.is_file():
        return "another model"
    target = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("net", {})
    return str(target.get("_target_", "another model")).rsplit(".", 1)[-1]


def checkpoint_lr(checkpoint: dict[str, Any]) -> float | None:
    """The learning rate the checkpoint's optimizer was created with (``initial_lr`` when a
    scheduler has changed ``lr`` since)."""
    states = checkpoint.get("optimizer_states") or []
    if not states or not states[0].get("param_groups"):
        return None
    group = states[0]["param_groups"][0]
    return group.get("initial_lr", group.get("lr"))


def lr_note(checkpoint: dict[str, Any], configured: float | None) -> str | None:
    """One line when ``optimizer.lr`` differs from the checkpoint's: the checkpoint's wins,
    because Lightning restores the optimizer (and scheduler) state with it, and an exact resume
    needs it; a new rate is a new run."""
    saved = checkpoint_lr(checkpoint)
    if saved is None or configured is None or np.isclose(saved, configured, rtol=1e-9, atol=0):
        return None
    return (
        f"optimizer.lr={configured:g} differs from the checkpoint's {saved:g}: the checkpoint's "
        f"{saved:g} is used (its optimizer state is restored); start a fresh run for {configured:g}"
    )
