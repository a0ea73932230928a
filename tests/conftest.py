"""Shared fixtures: generated datasets in real formats and the real Hydra config, shrunk
(the helpers they use are in tests/helpers.py)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers import (
    FAST,
    GENERATED,
    compose_train,
    write_cifar10_layout,
    write_class_folders,
    write_torchvision_layout,
)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """MNIST and FashionMNIST (600 train / 200 test each) and CIFAR-10 (200 / 60) in
    torchvision's on-disk layouts."""
    root = tmp_path_factory.mktemp("data")
    write_torchvision_layout(root, "MNIST", seed=1)
    write_torchvision_layout(root, "FashionMNIST", seed=2)
    write_cifar10_layout(root, seed=3)
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A folder of 3 class folders of 30 PNG/JPEG images each, of mixed sizes and modes."""
    return write_class_folders(tmp_path_factory.mktemp("images"), per_class=30)


@pytest.fixture
def train_cfg(data_dir, tmp_path):
    """Returns a function composing the shrunk train config that writes under ``tmp_path``."""

    def make(*overrides: str) -> DictConfig:
        paths = [f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}"]
        fast = [o for o in FAST if o != GENERATED or "data=imagefolder" not in overrides]
        return compose_train([*paths, *fast, *overrides])

    return make


def _local(host: object) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:  # a host name
        return False


@pytest.fixture
def no_internet(monkeypatch) -> list:
    """Refuses, and lists, every attempt of this process to look up or connect to a host other
    than this machine (Unix sockets and loopback, as wandb's own service uses, stay open). The
    test asserts the list is empty; processes started by the test are not watched."""
    tried: list = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            tried.append(address)
            raise OSError(f"the test refuses a connection to {address}")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            tried.append(host)
            raise socket.gaierror(f"the test refuses to look up {host}")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return tried
