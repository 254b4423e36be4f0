"""A small residual CNN for 2D MRI slices, trained from scratch (the project's own design).

Compared with the seed CNN it adds batch normalisation, residual connections (He et al., CVPR
2016), global average pooling instead of a large dense layer (so it has ~40x fewer parameters in
its head and is less prone to overfitting), and dropout before the classifier.
"""

from __future__ import annotations

from torch import Tensor, nn


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class MRICNN(nn.Module):
    """Stem (conv 5x5 /2) then residual stages of 32, 64, 128, 256 channels, each /2, GAP, FC.

    Input ``(B, 3, S, S)`` float32 ImageNet-normalised (any S >= 64); output ``(B, C)`` logits.
    """

    def __init__(self, num_classes: int = 4, widths: tuple[int, ...] = (32, 64, 128, 256),
                 dropout: float = 0.3) -> None:
        super().__init__()
        stem = widths[0] // 2
        layers: list[nn.Module] = [nn.Conv2d(3, stem, 5, 2, 2, bias=False), nn.BatchNorm2d(stem),
                                   nn.ReLU(inplace=True)]
        in_ch = stem
        for width in widths:
            layers += [_ResBlock(in_ch, width, 2), _ResBlock(width, width, 1)]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout),
                                        nn.Linear(in_ch, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)))
