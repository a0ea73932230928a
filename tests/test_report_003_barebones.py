"""reproduction/report_003_barebones.py: report 003's Part II loop, run on CIFAR-10 files."""

import math
import subprocess
import sys
from pathlib import Path

import torch

from lightning_models.nets import ThreeLayerConvNet

SCRIPT = Path(__file__).resolve().parents[1] / "reproduction" / "report_003_barebones.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_003_barebones", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_it_trains_one_epoch_and_prints_the_validation_accuracy(data_dir):
    # 200 generated training images: 150 train in batches of 64 (3 iterations), 50 validate
    done = run("--data-dir", str(data_dir), "--train", "150", "--val", "50", "--print-every", "1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert [line.split(",")[0] for line in lines[:3]] == [f"iteration {t}" for t in range(3)]
    assert lines[-1].startswith("after the epoch (3 iterations): val acc ")
    assert 0.0 <= float(lines[-1].rsplit(" ", 1)[1]) <= 1.0


def test_bad_input_is_one_sentence(data_dir, tmp_path):
    missing = run("--data-dir", str(tmp_path))
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert "holds no cifar-10-batches-py/" in missing.stderr
    too_many = run("--data-dir", str(data_dir))  # 49,000 + 1,000 of 200 images
    assert too_many.returncode != 0 and "Traceback" not in too_many.stderr
    assert "is more than the 200 images" in too_many.stderr


def test_its_function_is_the_labs_net_and_its_init_kaiming_over_fan_in():
    script = load_script()
    torch.manual_seed(0)
    params = script.initial_params()
    net = ThreeLayerConvNet(3, 32, 10, zero_bias=True)
    with torch.no_grad():
        for module, (w, b) in zip((net.conv1, net.conv2), (params[0:2], params[2:4]), strict=True):
            module.weight.copy_(w)
            module.bias.copy_(b)
        net.fc.weight.copy_(params[4].T)  # the script's FC weight is (in, out)
        net.fc.bias.copy_(params[5])
        x = torch.randn(4, 3, 32, 32)
        torch.testing.assert_close(net(x), script.three_layer_convnet(x, params))
    for w, fan_in in ((params[0], 3 * 25), (params[2], 32 * 9), (params[4], 16 * 32 * 32)):
        assert abs(w.std().item() / math.sqrt(2 / fan_in) - 1) < 0.1
