"""LightningDataModules of the lab; each ``data=`` config instantiates one of these.

Importing this package also registers the OmegaConf resolver ``lab.count_classes`` that
``conf/data/imagefolder.yaml`` uses, so import it before composing the config.
"""

from datamodules.base import Augmentation, ImageDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "Augmentation",
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
]
