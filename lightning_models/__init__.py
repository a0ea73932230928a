"""LightningModules of the lab (one generic classifier) and the architectures it wraps."""

from lightning_models.classifier import ImageClassifier
from lightning_models.errors import DivergedError, LabError, build

__all__ = ["DivergedError", "ImageClassifier", "LabError", "build"]
