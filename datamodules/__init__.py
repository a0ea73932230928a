"""LightningDataModules of the lab; each ``data=`` config instantiates one of these."""

from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = ["FashionMNISTDataModule", "MNISTDataModule"]
