"""The config a checkpoint was trained with, read back from its run dir.

Every run saves its composed config in ``<run dir>/.hydra/config.yaml`` and its checkpoints in
``<run dir>/checkpoints/``; testing or predicting with a checkpoint rebuilds the same model and
data from there, whatever the command line says.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lightning_models.errors import LabError


def config_of_checkpoint(cfg: DictConfig) -> DictConfig:
    """The config the run of ``cfg.ckpt_path`` was trained with (for testing or predicting).

    Read back from ``<run dir>/.hydra/config.yaml`` (the checkpoint lives in
    ``<run dir>/checkpoints/``), so the same model and data are rebuilt whatever this command's
    overrides; where to find data, where to write and on which device stay this invocation's.
    """
    ckpt = Path(cfg.ckpt_path).expanduser()
    if not ckpt.is_file():
        raise LabError(
            f"ckpt_path={cfg.ckpt_path} is not a file; give a .ckpt of a run's checkpoints/"
        )
    saved = ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise LabError(
            f"no training config beside ckpt_path={cfg.ckpt_path} (looked for {saved}); evaluate a "
            "checkpoint inside its run dir, <run dir>/checkpoints/<name>.ckpt"
        )
    trained = OmegaConf.load(saved)
    for key in ("paths", "trainer", "callbacks", "logger", "train", "test", "ckpt_path", "seed"):
        trained[key] = cfg.get(key)
    return trained
