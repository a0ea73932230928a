"""StepCheckpoint: ``last.ckpt`` every N training steps, never on a batch a validation follows;
the default callbacks write the best and the latest checkpoints with Lightning's own callback."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_models.checkpoints import StepCheckpoint
from tests.helpers import compose_train


class TinyModule(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def saved_files(tmp_path: Path, checkpoint: ModelCheckpoint) -> list[str]:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(40, 4), torch.randint(0, 2, (40,)))
    trainer = L.Trainer(
        max_epochs=3, callbacks=[checkpoint], logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(TinyModule(), DataLoader(data, batch_size=8))
    saved = Path(checkpoint.dirpath)
    return sorted(p.name for p in saved.iterdir()) if saved.is_dir() else []


def test_step_checkpoint_skips_the_batch_a_validation_follows(tmp_path):
    # 5 batches per epoch, every 5 steps: Lightning alone would save on each epoch's last batch.
    step = StepCheckpoint(dirpath=tmp_path / "s", filename="{step}", every_n_train_steps=5,
                          save_top_k=-1)  # fmt: skip
    assert saved_files(tmp_path, step) == []
    every_2 = StepCheckpoint(dirpath=tmp_path / "t", filename="{step}", every_n_train_steps=2,
                             save_top_k=-1)  # fmt: skip
    assert saved_files(tmp_path, every_2) == sorted(f"step={s}.ckpt" for s in (2, 4, 6, 8, 12, 14))
    lightning = ModelCheckpoint(dirpath=tmp_path / "l", filename="{step}", every_n_train_steps=2,
                                save_top_k=-1)  # fmt: skip
    assert saved_files(tmp_path, lightning) == sorted(
        f"step={s}.ckpt" for s in (2, 4, 6, 8, 10, 12, 14)
    )


def test_the_default_callbacks_are_lightnings_own():
    callbacks = compose_train([]).callbacks
    for name in ("model_checkpoint", "last_checkpoint"):
        assert callbacks[name]._target_ == "lightning.pytorch.callbacks.ModelCheckpoint"
    assert callbacks.step_checkpoint._target_ == "lightning_models.checkpoints.StepCheckpoint"
