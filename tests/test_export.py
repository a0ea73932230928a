"""``python -m lightning_models.tools.export``: a checkpoint of a real tiny run exported to ONNX
and TorchScript, loaded back with onnxruntime and ``torch.jit.load``, and compared with the
checkpoint's model on the run's test images as the documented input (pixels in [0, 1])."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from lightning_models.tools.export import main
from lightning_models.tools.predict import load_predictor
from tests.helpers import FAST, run_tool, run_train

# A log-softmax head (its outputs are exported as they are) on MNIST, and raw logits with
# BatchNorm and dropout (log-softmax added, eval mode) on FashionMNIST.
RUNS = {
    "log_softmax_head": ["model=lenet5_relu", "loss=nll", "data=mnist"],
    "logits_batchnorm": ["model=lenet5_modified", "data=fashion"],
}


@pytest.fixture(scope="module", params=list(RUNS))
def ckpt(request, data_dir, tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    trained = run_train(*RUNS[request.param], *FAST, data_dir=data_dir, log_dir=logs)
    assert trained.returncode == 0, trained.stderr[-2000:]
    (run,) = (logs / "train" / "runs").iterdir()
    (best,) = (run / "checkpoints").glob("epoch_*.ckpt")
    return best


@pytest.fixture
def on_data(data_dir, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(data_dir))  # where the run's config finds its data


def run_test_images(ckpt: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The run's test images as the exported model takes them (uint8 / 255, as ToTensor
    gives), the checkpoint's model's log-probabilities on them, and its class names."""
    predictor = load_predictor(ckpt, torch.device("cpu"))
    data = predictor.datamodule
    data.prepare_data()
    data.setup("test")
    pixels = data.data_test.data[:, None].float() / 255  # N x 1 x 28 x 28, in [0, 1]
    with torch.no_grad():
        out = predictor.model.eval()(predictor.normalize(pixels))
    expected = out if predictor.log_probs else out.log_softmax(dim=1)
    return pixels, expected, predictor.classes


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason='onnx, onnxruntime: pip install -e ".[export]"',
)
@pytest.mark.slow
def test_onnx_and_torchscript_give_the_checkpoint_s_predictions(ckpt, tmp_path, on_data, capsys):
    onnx_path, script_path = tmp_path / "model.onnx", tmp_path / "model.pt"
    code = main([str(ckpt), "--onnx", str(onnx_path), "--torchscript", str(script_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("check on 200 test images of the run: same class for 200/200") == 2, out
    assert out.count(": ok") == 2

    import onnx
    import onnxruntime

    pixels, expected, classes = run_test_images(ckpt)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "images" and given.shape[1:] == [1, 28, 28]
    from_onnx = torch.from_numpy(session.run(["log_probs"], {"images": pixels.numpy()})[0])
    with torch.no_grad():
        from_script = torch.jit.load(str(script_path))(pixels)
    for exported in (from_onnx, from_script):
        assert torch.equal(exported.argmax(dim=1), expected.argmax(dim=1))
        torch.testing.assert_close(exported, expected, rtol=1e-4, atol=1e-4)
    # Any batch size, and probabilities that sum to 1.
    for n in (1, 5):
        batch = session.run(["log_probs"], {"images": pixels[:n].numpy()})[0]
        assert batch.shape == (n, 10)
        torch.testing.assert_close(torch.from_numpy(batch).exp().sum(1), torch.ones(n))

    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert json.loads(props["classes"]) == classes
    assert "pixel values in [0, 1]" in props["input"]
    extra = {"lab.json": ""}
    torch.jit.load(str(script_path), _extra_files=extra)
    assert json.loads(json.loads(extra["lab.json"])["classes"]) == classes


# --- bad input: one sentence on stderr, exit status 2, nothing written -----------------------


def refused(capsys, argv: list[str]) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: ")
    return line


def test_a_missing_checkpoint(capsys, tmp_path):
    line = refused(capsys, [str(tmp_path / "no.ckpt"), "--torchscript", str(tmp_path / "m.pt")])
    assert f"{tmp_path / 'no.ckpt'} is not a file" in line
    assert not (tmp_path / "m.pt").exists()


def test_nothing_to_export(capsys, tmp_path):
    assert "give --onnx FILE and/or --torchscript FILE" in refused(capsys, [str(tmp_path)])


@pytest.mark.parametrize("where", ["a folder", "in a file", "in no folder"])
def test_an_output_that_cannot_be_written(capsys, tmp_path, where):
    (tmp_path / "file").write_text("")
    output, sentence = {
        "a folder": (tmp_path, "is a folder; give a file name"),
        "in a file": (tmp_path / "file" / "m.onnx", "is a file, not a folder"),
        "in no folder": (tmp_path / "missing" / "m.onnx", f"no folder {tmp_path / 'missing'}"),
    }[where]
    assert sentence in refused(capsys, ["x.ckpt", "--onnx", str(output)])


def test_onnx_without_the_export_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails, as uninstalled
    line = refused(capsys, ["x.ckpt", "--onnx", str(tmp_path / "m.onnx")])
    assert line.startswith("error: --onnx needs onnx") and "not installed here" in line
    assert "pip install -e '.[export]'" in line
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_file_that_is_not_a_checkpoint(ckpt, capsys, tmp_path, on_data):
    fake = ckpt.parent / "notes.ckpt"
    fake.write_text("not a checkpoint\n")
    try:
        line = refused(capsys, [str(fake), "--torchscript", str(tmp_path / "m.pt")])
    finally:
        fake.unlink()
    assert f"{fake} cannot be used" in line


@pytest.mark.slow
def test_the_command_line(ckpt, data_dir, tmp_path):
    out = tmp_path / "model.pt"
    done = run_tool("lightning_models.export", str(ckpt), "--torchscript", str(out),
                    "--check-images", "50", data_dir=data_dir, log_dir=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "torchscript check on 50 test images of the run: same class for 50/50" in done.stdout
    assert out.is_file()
    missing = run_tool("lightning_models.tools.export", str(tmp_path / "no.ckpt"), "--onnx",
                       str(tmp_path / "m.onnx"), data_dir=data_dir, log_dir=tmp_path)  # fmt: skip
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
