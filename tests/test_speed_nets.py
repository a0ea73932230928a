"""The speed-record net: parameter counts worked out from its layer list, shapes that
follow the data, a forward/backward pass, its refusals, and the record configs that build it."""

import pytest
import torch
import torch.nn.functional as F

from lightning_models import LabError
from lightning_models.build import instantiate_node as build
from lightning_models.nets import StridedConvNet
from tests.helpers import compose_train


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def conv_bn(c_in: int, c_out: int, k: int) -> int:
    """A bias-free k x k conv followed by BatchNorm (weight and bias)."""
    return c_in * c_out * k * k + 2 * c_out


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


# widths 16, 32, 64 on 1x28x28: 28 -s2-> 14 -s2-> 7 -s2-> 4
STRIDED_MAX_1x28x28 = conv_bn(1, 16, 5) + conv_bn(16, 32, 3) + conv_bn(32, 64, 3) + linear(64, 10)
STRIDED_FLAT_1x28x28 = (
    conv_bn(1, 16, 5) + conv_bn(16, 32, 3) + conv_bn(32, 64, 3) + linear(64 * 4 * 4, 10)
)


@pytest.mark.parametrize(
    ("head", "expected"), [("max", STRIDED_MAX_1x28x28), ("flatten", STRIDED_FLAT_1x28x28)]
)
def test_parameter_counts_follow_the_layer_list(head, expected):
    assert n_params(StridedConvNet(1, 28, 10, head=head)) == expected


def test_documented_count_matches_the_arithmetic():
    assert STRIDED_MAX_1x28x28 == 24_314
    assert STRIDED_FLAT_1x28x28 == 33_914


@pytest.mark.parametrize("head", ["max", "flatten"])
@pytest.mark.parametrize(("channels", "size", "classes"), [(1, 28, 10), (3, 32, 10), (3, 64, 15)])
def test_shapes_follow_the_data_and_gradients_flow(head, channels, size, classes):
    net = StridedConvNet(channels, size, classes, widths=(8, 16), stem_kernel=3, head=head)
    x = torch.randn(4, channels, size, size)
    out = net(x)
    assert out.shape == (4, classes)
    F.cross_entropy(out, torch.randint(0, classes, (4,))).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize(
    "kwargs", [{"widths": []}, {"widths": [16, 0]}, {"stem_kernel": 4}, {"head": "avg"}]
)
def test_refuses_bad_settings_in_a_sentence(kwargs):
    with pytest.raises(LabError, match="model.net"):
        StridedConvNet(1, 28, 10, **kwargs)


def test_model_config_builds_the_net():
    cfg = compose_train(["model=strided_convnet", "data=mnist"])
    net = build(cfg.model.net)
    assert isinstance(net, StridedConvNet)
    assert n_params(net) == STRIDED_MAX_1x28x28


@pytest.mark.parametrize("experiment", ["mnist_record", "fashion_record"])
def test_record_configs_compose_without_validation(experiment):
    cfg = compose_train([f"experiment={experiment}"])
    assert cfg.data.val_size == 0 and cfg.data.fast is True
    net = build(cfg.model.net)
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
