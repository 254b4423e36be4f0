"""Choosing the torch device for training and inference."""

from __future__ import annotations

import torch

from mrimaster.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> a CUDA GPU when there is one, else the CPU; ``cpu``/``cuda`` as named.

    Raises:
        ConfigError: ``cuda`` was asked for and there is no GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available", "use device=cpu")
    return torch.device(name)
