"""Architectures: parameter counts from SPEC.md, shapes that follow the data, clear shape errors."""

import pytest
import torch

from lightning_models.nets import FCN, InputShapeError, LeNet5, LeNet5Modified, LeNet5ReLU


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (FCN, 408_074),  # SPEC.md
        (LeNet5, 61_706),  # SPEC.md
        (LeNet5Modified, 61_706 + 2 * (6 + 16 + 120)),  # lenet5 + BatchNorm2d weight and bias
        (LeNet5ReLU, 61_706),  # same layers as lenet5, different activations
    ],
)
def test_parameter_counts_on_mnist_shape(cls, expected):
    assert n_params(cls(in_channels=1, image_size=28, num_classes=10)) == expected


@pytest.mark.parametrize("cls", [FCN, LeNet5, LeNet5Modified, LeNet5ReLU])
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 32, 7), (1, 64, 3)])
def test_output_shape_follows_the_data(cls, channels, size, classes):
    net = cls(in_channels=channels, image_size=size, num_classes=classes)
    assert net(torch.randn(4, channels, size, size)).shape == (4, classes)


def test_lenet5_relu_head_gives_log_probabilities():
    net = LeNet5ReLU(1, 28, 10).eval()
    probs = net(torch.randn(5, 1, 28, 28)).exp().sum(dim=1)
    torch.testing.assert_close(probs, torch.ones(5))
    assert net.outputs_log_probs
    assert not LeNet5ReLU(1, 28, 10, log_softmax=False).outputs_log_probs


def test_layer_lists_match_the_reports():
    classic = LeNet5(1, 28, 10)
    kinds = [type(m).__name__ for m in classic.features]
    assert kinds == [
        "Conv2d",
        "Tanh",
        "AvgPool2d",
        "Conv2d",
        "Tanh",
        "AvgPool2d",
        "Conv2d",
        "Tanh",
        "Flatten",
    ]
    modified = LeNet5Modified(1, 28, 10)
    assert [type(m).__name__ for m in modified.features][:4] == [
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "MaxPool2d",
    ]
    assert [type(m).__name__ for m in modified.classifier] == [
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    assert modified.classifier[2].p == 0.2


def test_too_small_input_names_model_needed_and_given_shape():
    with pytest.raises(
        InputShapeError,
        match=r"lenet5 needs input images of at least 1x28x28, "
        r"but the data gives 1x16x16",
    ):
        LeNet5(in_channels=1, image_size=16, num_classes=10)
