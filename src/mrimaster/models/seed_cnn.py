"""The seed project's CNN, reproduced faithfully."""

from __future__ import annotations

from torch import Tensor, nn


class SeedCNN(nn.Module):
    """Four blocks of conv 3x3 -> ReLU -> max-pool 2 (8, 16, 32, 64 filters), dense 100, dense C.

    Input ``(B, 3, 256, 256)`` float32, ImageNet-normalised; output ``(B, C)`` logits.
    """

    cam_layer = "features.10"
    """Grad-CAM's default target: the ReLU after the last convolution."""

    def __init__(self, num_classes: int = 4, image_size: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch in (8, 16, 32, 64):
            layers += [nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        side = image_size // 16
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 100),
                                        nn.ReLU(inplace=True), nn.Linear(100, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
