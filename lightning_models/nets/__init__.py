"""Architectures as plain ``nn.Module``s; each takes its sizes from the data config."""

from lightning_models.nets._shapes import InputShapeError
from lightning_models.nets.cifar_cnn import CifarCNN
from lightning_models.nets.conv_groups import ConvGroupsNet
from lightning_models.nets.cs231n import ThreeLayerConvNet, TwoLayerFC
from lightning_models.nets.fcn import FCN
from lightning_models.nets.lenet5 import LeNet5, LeNet5Modified, LeNet5ReLU
from lightning_models.nets.lenet5_any import LeNet5Any
from lightning_models.nets.mlp_deep import MLPDeep
from lightning_models.nets.resnet_small import ResNetSmall
from lightning_models.nets.softmax_regression import SoftmaxRegression
from lightning_models.nets.strided_convnet import StridedConvNet

__all__ = [
    "FCN",
    "CifarCNN",
    "ConvGroupsNet",
    "InputShapeError",
    "LeNet5",
    "LeNet5Any",
    "LeNet5Modified",
    "LeNet5ReLU",
    "MLPDeep",
    "ResNetSmall",
    "SoftmaxRegression",
    "StridedConvNet",
    "ThreeLayerConvNet",
    "TwoLayerFC",
]
