"""VGG16 transfer learning as in the seed: ImageNet ``features`` frozen, new 4-way last layer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG16_Weights, vgg16

from mrimaster.errors import ModelError


def vgg16_cache_path() -> Path:
    """Where torchvision's weights API looks for the VGG16 ImageNet checkpoint."""
    url = VGG16_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def build_vgg16(num_classes: int, pretrained: bool, dropout: float = 0.2) -> nn.Module:
    """VGG16 (Simonyan & Zisserman, ICLR 2015), the seed's transfer-learning recipe.

    With ``pretrained``, ImageNet weights come through torchvision's weights API, which reads
    torch's hub cache first; on machines without internet they must already be there.
    All of ``features`` is frozen and ``classifier[6]`` becomes a ``num_classes`` layer;
    dropout in the classifier is ``dropout``. Input ``(B, 3, 224, 224)`` ImageNet-normalised.
    """
    weights = None
    if pretrained:
        cached = vgg16_cache_path()
        if not cached.is_file():
            raise ModelError(
                f"VGG16 ImageNet weights are not in torch's cache ({cached}) and cannot be "
                "downloaded from here",
                "on a machine with internet run: python -c \"import torchvision; "
                "torchvision.models.vgg16(weights='IMAGENET1K_V1')\" and copy the file to "
                f"{cached} (or set TORCH_HOME), or train with pretrained=false")
        weights = VGG16_Weights.IMAGENET1K_V1
    try:
        model = vgg16(weights=weights, dropout=dropout)
    except (RuntimeError, OSError) as exc:
        raise ModelError(f"could not load VGG16 weights from {vgg16_cache_path()}: {exc}",
                         "delete the file and fetch it again") from exc
    if pretrained:
        for param in model.features.parameters():
            param.requires_grad = False
    model.classifier[6] = nn.Linear(4096, num_classes)
    model.cam_layer = "features.29"  # Grad-CAM's default: the ReLU after the last convolution
    return model
