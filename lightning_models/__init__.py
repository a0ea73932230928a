"""LightningModules of the lab (one generic classifier) and the architectures it wraps."""

import lightning_models.resolvers  # noqa: F401  (the config resolvers, before any config is read)
from lightning_models.checks import DivergedError, LabError
from lightning_models.classifier import ImageClassifier

__all__ = ["DivergedError", "ImageClassifier", "LabError"]
