"""Bad input, through the command line as a user types it: each case exits non-zero with a
sentence saying what was wrong (no stack trace), before anything is written: no run folder, so no
checkpoint and no event file either."""

import pytest
import torch

from tests.helpers import GENERATED, run_train

SMALL_VAL = "data.val_size=100"  # the generated training sets hold 600 images

# (command-line arguments, what the output must say, which data folder: generated or empty)
CASES = [
    (["model=nope"], "Could not find 'model/nope'", "generated"),
    (["data=nope"], "Could not find 'data/nope'", "generated"),
    (["optimizer.lrr=0.1"], "Could not override 'optimizer.lrr'", "generated"),
    (["data.batch_size=0"], "data.batch_size=0 is not allowed", "generated"),
    (["data.batch_size=abc"], "data.batch_size='abc' is not allowed", "generated"),
    (["data.val_size=-5"], "data.val_size=-5 is not allowed", "generated"),
    (["optimizer.lr=-1"], "optimizer.lr=-1 is not allowed", "generated"),
    (["optimizer.lr=fast"], "optimizer.lr='fast' is not allowed", "generated"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed", "generated"),
    (["data.val_size=1000000"], "data.val_size=1000000 is not smaller than the FashionMNIST "
                                "training set (600 images)", "generated"),
    (["model=cifar_cnn", SMALL_VAL], "model cifar_cnn takes only 3x32x32 input images, but the "
                                     "data gives 1x28x28", "generated"),
    (["loss=nll", SMALL_VAL], "loss NLLLoss expects log-probabilities, but LeNet5 returns raw "
                              "logits", "generated"),
    (["data=mnist", "data.download=false"], "MNIST files not found: searched", "empty"),
    (["data.verify_checksums=true", SMALL_VAL], "is corrupt or incomplete (MD5 ", "generated"),
    (["ckpt_path=/no/such.ckpt"], "ckpt_path=/no/such.ckpt is not a file", "generated"),
    (["ckpt_path=last"], "ckpt_path=last found nothing to resume", "generated"),
    (["data=imagefolder"], "data.root is not set", "generated"),
    (["data=imagefolder", "data.root={empty}"], "has no class sub-folders", "generated"),
    # Values only the library can judge: it refuses them, the lab names the key.
    (["loss.label_smoothing=2", SMALL_VAL], "loss=cross_entropy cannot be used: label_smoothing "
                                            "must be between 0.0 and 1.0", "generated"),
    (["optimizer.betas=[2,0.999]", SMALL_VAL], "optimizer=adam cannot be used: Invalid beta "
                                               "parameter at index 0: 2", "generated"),
    (["trainer.precision=sideways", SMALL_VAL], "trainer cannot be used: Precision 'sideways' is "
                                               "invalid", "generated"),
    (["callbacks.model_checkpoint.mode=sideways", SMALL_VAL],
     "callbacks.model_checkpoint cannot be used: ", "generated"),
    (["ckpt_path={truncated}", SMALL_VAL], "cannot be used: PytorchStreamReader failed reading zip "
                                           "archive", "generated"),
    (["paths.log_dir={file}/logs", SMALL_VAL],
     "paths.log_dir={file}/logs cannot be used: {file} is a file, not a folder", "generated"),
    # The training switches (lightning_models/switches.py, checks.check_run_parts).
    (["model.compile=maybe", SMALL_VAL], "model.compile='maybe' is not allowed; use true or "
                                         "false", "generated"),
    (["callbacks=[default,ema]", "callbacks.ema.decay=2", SMALL_VAL],
     "callbacks.ema.decay=2 is not allowed; use a number strictly between 0 and 1", "generated"),
    (["callbacks=[default,early_stopping]", "data.val_size=0"],
     "callbacks.early_stopping stops on val/acc, but this run has no validation set", "generated"),
]  # fmt: skip


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize(("args", "sentence", "data"), CASES, ids=[" ".join(c[0]) for c in CASES])
@pytest.mark.slow
def test_bad_input_is_rejected_before_training(data_dir, tmp_path, args, sentence, data):
    empty = tmp_path / "empty"
    empty.mkdir()
    # a checkpoint cut short, as a full disk or an interrupted copy leaves it
    truncated = tmp_path / "last.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    places = {"empty": empty, "truncated": truncated, "file": a_file}
    args = [a.format(**places) for a in args]
    sentence = sentence.format(**places)
    if "data.verify_checksums=true" not in args and not any(a.startswith("data=") for a in args):
        args.append(GENERATED)  # generated files are no original copy
    logs = tmp_path / "logs"
    result = run_train(*args, data_dir=data_dir if data == "generated" else empty, log_dir=logs)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert sentence in output and "Traceback" not in output
    assert not logs.exists() or not list(logs.iterdir()), "bad input must leave nothing behind"
