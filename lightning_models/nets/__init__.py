"""Architectures as plain ``nn.Module``s; each takes its sizes from the data config."""

from lightning_models.nets._shapes import InputShapeError
from lightning_models.nets.fcn import FCN
from lightning_models.nets.lenet5 import LeNet5, LeNet5Modified, LeNet5ReLU

__all__ = ["FCN", "InputShapeError", "LeNet5", "LeNet5Modified", "LeNet5ReLU"]
