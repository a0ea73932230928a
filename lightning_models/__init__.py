"""LightningModules of the lab (one generic classifier) and the architectures it wraps."""

from lightning_models.checks import DivergedError, LabError
from lightning_models.classifier import ImageClassifier

__all__ = ["DivergedError", "ImageClassifier", "LabError"]
