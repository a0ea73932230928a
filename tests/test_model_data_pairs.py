"""Every ``model=`` with every ``data=``: trains when the model can take the data's shape, and
otherwise stops at start-up with a sentence naming the model, the shape it needs and the one it got.
"""

import pytest
import torch

from lightning_models import ImageClassifier, LabError
from lightning_models.build import instantiate_node as build
from tests.helpers import CONF, compose_train
from train import train

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATAS = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))
# Nets whose Linear width is written for one input shape (report 003), and that shape.
FIXED_INPUT = {"three_layer_convnet": "3x32x32", "cifar_cnn": "3x32x32"}
SHAPES = {"mnist": "1x28x28", "fashion": "1x28x28", "cifar10": "3x32x32", "imagefolder": "3x64x64"}


def takes(model: str, data: str) -> bool:
    return model not in FIXED_INPUT or FIXED_INPUT[model] == SHAPES[data]


VALID = [(m, d) for m in MODELS for d in DATAS if takes(m, d)]
INVALID = [(m, d) for m in MODELS for d in DATAS if not takes(m, d)]


def data_overrides(data: str, image_folder) -> list[str]:
    extra = [f"data={data}"]
    if data == "imagefolder":
        extra += [f"data.root={image_folder}", "data.val_size=12", "data.test_size=12"]
    return extra


def test_every_option_is_covered():
    assert set(DATAS) == set(SHAPES)
    assert len(VALID) + len(INVALID) == len(MODELS) * len(DATAS) and len(INVALID) == 6
    assert {"fcn", "lenet5", "lenet5_modified", "lenet5_relu", "mlp_deep", "two_layer_fc",
            "three_layer_convnet", "cifar_cnn", "lenet5_any", "resnet_small",
            "softmax_regression_manual"} <= set(MODELS)  # fmt: skip


@pytest.mark.parametrize(("model", "data"), VALID)
@pytest.mark.slow
def test_every_valid_pair_composes_and_runs(train_cfg, image_folder, model, data):
    cfg = train_cfg(
        f"model={model}", *data_overrides(data, image_folder), "trainer.fast_dev_run=true"
    )
    module = build(cfg.model)
    assert isinstance(module, ImageClassifier)
    shape = (2, cfg.data.in_channels, cfg.data.image_size, cfg.data.image_size)
    assert module.eval()(torch.zeros(shape)).shape == (2, cfg.data.num_classes)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0


@pytest.mark.parametrize(("model", "data"), INVALID)
def test_invalid_pair_fails_at_start_with_the_shapes(
    train_cfg, image_folder, tmp_path, model, data
):
    cfg = train_cfg(f"model={model}", *data_overrides(data, image_folder))
    sentence = (
        f"model {model} takes only {FIXED_INPUT[model]} input images, but the data gives "
        f"{SHAPES[data]}; set data.in_channels=3 data.image_size=32, or pick another model"
    )
    with pytest.raises(LabError) as err:
        train(cfg)
    assert str(err.value) == sentence
    assert not list(tmp_path.rglob("*.ckpt"))


def test_the_remedy_in_the_sentence_works(train_cfg):
    cfg = train_cfg("model=cifar_cnn", "data=mnist", "data.in_channels=3", "data.image_size=32",
                    "trainer.fast_dev_run=true")  # fmt: skip
    assert 0.0 <= train(cfg)["test/acc"] <= 1.0


def test_num_classes_of_an_image_folder_flows_into_the_model(image_folder):
    cfg = compose_train(["model=resnet_small", "data=imagefolder", f"data.root={image_folder}"])
    assert cfg.data.num_classes == 3 and cfg.model.num_classes == 3
    assert build(cfg.model)(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
