"""The training switches of timm and torchvision's references, each on a real tiny run of the
real config: EMA and SWA of the weights (what validation, the checkpoints and the test use, and
exact resume), bf16 mixed precision on the CPU, torch.compile, gradient clipping and early
stopping; and their bad values, refused with one sentence before anything is written."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from lightning_models.build import build_run
from lightning_models.checks import LabError
from train import fit_and_test

# callbacks=[default,<name>] is how a run adds one (conf/callbacks/<name>.yaml).
EMA = ["callbacks=[default,ema]", "callbacks.ema.decay=0.5"]  # 0.5: the average differs visibly
SWA = ["callbacks=[default,swa]", "callbacks.swa.swa_epoch_start=2", "trainer.max_epochs=3"]
QUIET = ["print_config=false", "~callbacks.test_figures"]


def fit(train_cfg, *overrides: str):
    """Build the run of the shrunk config with ``overrides``, fit and test it: (run, metrics)."""
    run = build_run(train_cfg(*QUIET, *overrides))
    return run, fit_and_test(run)


@torch.no_grad()
def evaluate(run, state_dict: dict, loader, batches: int) -> tuple[float, float]:
    """Accuracy and mean loss of ``state_dict`` in the run's model on the first ``batches`` of
    ``loader`` (the batches the shrunk run's validation or test saw)."""
    model = run.model
    model.load_state_dict(state_dict)
    model.eval()
    correct = seen = 0
    loss = 0.0
    for i, (x, y) in enumerate(loader):
        if i == batches:
            break
        out = model(x)
        correct += int((out.argmax(dim=1) == y).sum())
        loss += float(model.criterion(out, y)) * len(y)
        seen += len(y)
    return correct / seen, loss / seen


def checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def best_score(ckpt: dict) -> float:
    (state,) = [v for k, v in ckpt["callbacks"].items() if "'monitor': 'val/acc'" in k]
    return float(state["best_model_score"])


def different(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


# --- bad values ------------------------------------------------------------------------------

BAD = [
    (["model.compile=yes"], "model.compile='yes' is not allowed; use true or false"),
    ([*EMA[:1], "callbacks.ema.decay=1.5"], "callbacks.ema.decay=1.5 is not allowed"),
    ([*EMA[:1], "callbacks.ema.decay=1"], "callbacks.ema.decay=1 is not allowed"),
    ([*EMA[:1], "callbacks.ema.update_every_n_steps=0"],
     "callbacks.ema.update_every_n_steps=0 is not allowed"),
    ([*SWA[:1], "callbacks.swa.swa_lrs=-1"], "callbacks.swa.swa_lrs=-1 is not allowed"),
    ([*SWA[:1], "callbacks.swa.swa_epoch_start=0"],
     "callbacks.swa.swa_epoch_start=0 is not allowed"),
    ([*SWA[:1], "callbacks.swa.annealing_strategy=cosine"],
     "callbacks.swa.annealing_strategy='cosine' is not allowed"),
    ([*SWA[:1], "trainer.max_epochs=-1"], "callbacks.swa.swa_epoch_start=0.8 is a fraction of "
                                          "trainer.max_epochs, which is -1"),
    ([*SWA[:1], "callbacks.swa.swa_epoch_start=3", "trainer.max_epochs=2"],
     "callbacks.swa.swa_epoch_start=3 comes after the last epoch (trainer.max_epochs=2)"),
    (["callbacks=[default,ema,swa]"], "callbacks ema and swa both average the weights"),
    (["callbacks=[default,swa,early_stopping]"],
     "callbacks.swa averages the weights up to the last epoch, which callbacks.early_stopping"),
    (["callbacks=[default,early_stopping]", "data.val_size=0"],
     "callbacks.early_stopping stops on val/acc, but this run has no validation set"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is not allowed"),
    (["model=softmax_regression_manual", "trainer.gradient_clip_val=1.0"],
     "trainer.gradient_clip_val=1.0 cannot be used with model=softmax_regression_manual"),
    (["trainer.gradient_clip_algorithm=sideways", "trainer.gradient_clip_val=1.0"],
     "trainer cannot be used: "),
    (["trainer.precision=sideways"], "trainer cannot be used: Precision 'sideways' is invalid"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "sentence"), BAD, ids=[" ".join(o) for o, _ in BAD])
def test_bad_values_are_one_sentence_before_anything_is_written(
    train_cfg, tmp_path, overrides, sentence
):
    with pytest.raises(LabError) as raised:
        build_run(train_cfg(*overrides))
    assert sentence in str(raised.value)
    assert "\n" not in str(raised.value)
    assert not any(tmp_path.iterdir()), "nothing is written before the run"


# --- EMA and SWA -----------------------------------------------------------------------------


@pytest.mark.slow
def test_ema_validates_checkpoints_and_tests_the_average(train_cfg, tmp_path):
    run, metrics = fit(train_cfg, *EMA, "trainer.max_epochs=2")
    best = checkpoint(run.trainer.checkpoint_callback.best_model_path)
    # The checkpoint holds the average as its state_dict, the trained weights beside it.
    assert different(best["state_dict"], best["current_model_state"])
    data = run.datamodule
    data.setup("test")
    # val/acc, by which this checkpoint is the best, is the accuracy of its state_dict...
    val_acc, _ = evaluate(run, best["state_dict"], data.val_dataloader(), batches=2)
    assert val_acc == pytest.approx(best_score(best))
    # ...and the test ran on it too, not on the weights being trained (Lightning's own
    # EMAWeightAveraging puts current_model_state into the model it tests).
    test_acc, test_loss = evaluate(run, best["state_dict"], data.test_dataloader(), batches=2)
    assert (test_acc, test_loss) == pytest.approx((metrics["test/acc"], metrics["test/loss"]))
    _, trained_loss = evaluate(run, best["current_model_state"], data.test_dataloader(), 2)
    assert trained_loss != pytest.approx(metrics["test/loss"])


@pytest.mark.slow
def test_swa_writes_and_tests_the_averaged_model(train_cfg, tmp_path):
    run, metrics = fit(train_cfg, *SWA)
    swa = checkpoint(tmp_path / "checkpoints" / "swa.ckpt")
    last = checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    # LeNet-5 has no BatchNorm: last.ckpt, written at the end of the last epoch, holds the
    # trained weights; swa.ckpt the average, the callback's own copy of it.
    (averaged,) = [v for k, v in swa["callbacks"].items() if k.startswith("SWA")]
    for name, value in averaged["average_model_state"].items():
        if name.startswith("net."):
            assert torch.equal(swa["state_dict"][name], value), name
    assert different(swa["state_dict"], last["state_dict"])
    assert averaged["n_averaged"] == 2  # epochs 2 and 3
    data = run.datamodule
    data.setup("test")
    test = evaluate(run, swa["state_dict"], data.test_dataloader(), batches=2)
    assert test == pytest.approx((metrics["test/acc"], metrics["test/loss"]))


@pytest.mark.slow
@pytest.mark.parametrize("averaging", [EMA, SWA], ids=["ema", "swa"])
def test_a_run_with_averaged_weights_resumes_exactly(train_cfg, tmp_path, averaging):
    # lenet5_modified: dropout, BatchNorm (SWA's extra epoch for its statistics) and a one-cycle
    # schedule, which SWA replaces from its first epoch on.
    settings = ["model=lenet5_modified", "trainer.max_epochs=3", *averaging]
    whole = tmp_path / "whole"
    fit(train_cfg, *settings, f"paths.output_dir={whole}")
    cut = tmp_path / "cut"
    stop = "+callbacks.stop={_target_:tests.helpers.StopAfterEpoch,epoch:1}"
    fit(train_cfg, *settings, f"paths.output_dir={cut}", stop)
    fit(train_cfg, *settings, f"paths.output_dir={cut}", f"ckpt_path={cut}/checkpoints/last.ckpt")
    names = {p.name for p in (whole / "checkpoints").iterdir()}
    assert names == {p.name for p in (cut / "checkpoints").iterdir()}
    for name in names:
        a, b = checkpoint(whole / "checkpoints" / name), checkpoint(cut / "checkpoints" / name)
        for key in ("state_dict", "current_model_state", "averaging_state"):
            if key in a:
                assert a[key].keys() == b[key].keys()
                for k in a[key]:
                    assert torch.equal(a[key][k], b[key][k]), (name, key, k)


# --- precision, clipping, early stopping, compile --------------------------------------------


@pytest.mark.slow
def test_bf16_mixed_trains_on_the_cpu(train_cfg):
    run = build_run(train_cfg(*QUIET, "trainer.precision=bf16-mixed", "trainer.max_epochs=2"))
    dtypes = set()
    run.model.net.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    metrics = fit_and_test(run)
    assert run.trainer.precision == "bf16-mixed"
    assert torch.bfloat16 in dtypes, "the net ran under autocast to bfloat16"
    for key in ("train/loss", "val/loss", "test/loss"):
        assert math.isfinite(metrics[key]), key
    assert metrics["status"] == "ok"
    # Mixed precision computes in bfloat16; the weights, and so the checkpoints, stay float32.
    state = checkpoint(run.trainer.checkpoint_callback.best_model_path)["state_dict"]
    assert {v.dtype for k, v in state.items() if k.startswith("net.")} == {torch.float32}


class GradientNorms(L.Callback):
    """The gradients before Lightning clips them (``on_before_optimizer_step``) and after the
    step (``on_train_batch_end``: zeroed only at the next step): total L2 norm and largest
    element."""

    def __init__(self) -> None:
        self.before: list[tuple[float, float]] = []
        self.after: list[tuple[float, float]] = []

    @staticmethod
    def measure(module) -> tuple[float, float]:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads))
        return norm, max(float(g.abs().max()) for g in grads)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before.append(self.measure(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(self.measure(pl_module))


@pytest.mark.slow
@pytest.mark.parametrize(("algorithm", "measure"), [("norm", 0), ("value", 1)])
def test_gradient_clipping_bounds_the_gradients(train_cfg, algorithm, measure):
    clip = 0.01  # below LeNet-5's gradients on a first batch, so every step clips
    run = build_run(
        train_cfg(*QUIET, "optimizer.lr=10", f"trainer.gradient_clip_val={clip}",
                  f"trainer.gradient_clip_algorithm={algorithm}")
    )  # fmt: skip
    norms = GradientNorms()
    run.trainer.callbacks.append(norms)
    fit_and_test(run)
    assert len(norms.after) == 3
    assert all(before[measure] > clip for before in norms.before)
    assert all(after[measure] <= clip * (1 + 1e-5) for after in norms.after)


@pytest.mark.slow
def test_early_stopping_ends_the_fit_early(train_cfg):
    # min_delta=1: no rise of val/acc can count, so the fit stops after patience=1 validation
    # without improvement: after epoch 2 of 5.
    run, metrics = fit(
        train_cfg,
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1.0",
        "trainer.max_epochs=5",
    )
    assert run.trainer.current_epoch == 2 and metrics["epochs"] == 2
    assert run.trainer.should_stop
    assert "test/acc" in metrics


@pytest.mark.slow
def test_compiled_run_checkpoint_loads_into_a_plain_model(train_cfg):
    run, _ = fit(train_cfg, "model.compile=true", "trainer.limit_train_batches=2",
                 "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")  # fmt: skip
    assert run.model._net_compiled
    path = run.trainer.checkpoint_callback.best_model_path
    state = checkpoint(path)["state_dict"]
    assert not any("_orig_mod" in k for k in state)
    plain = build_run(train_cfg(*QUIET)).model  # model.compile=false, never compiled
    plain.load_state_dict(state)
    data = run.datamodule
    data.setup("test")
    x, _ = next(iter(data.test_dataloader()))
    with torch.no_grad():
        compiled_out = run.model.eval()(x)  # the best checkpoint's weights, after the test
        plain_out = plain.eval()(x)
    torch.testing.assert_close(compiled_out, plain_out, rtol=1e-4, atol=1e-5)
    assert torch.equal(compiled_out.argmax(1), plain_out.argmax(1))
