"""The 3D U-Net (MONAI) and its model file, which records the modalities it takes."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet
from torch import nn

from mrimaster.atomic import replaced_whole
from mrimaster.errors import ModelError
from mrimaster.models.paths import resolve_model_path
from mrimaster.segmentation.runtime import SegInfo, info_from_dict
from mrimaster.segmentation.sliding_window import sliding_window

FORMAT = "mrimaster-segmenter/1"


def build_unet(in_channels: int, channels: tuple[int, ...] = (16, 32, 64, 128),
               num_res_units: int = 1) -> nn.Module:
    """A residual 3D U-Net (Ronneberger et al. 2015; Cicek et al. 2016; MONAI's ``UNet``).

    Input ``(B, C, D, H, W)`` float32 z-scored; output ``(B, 3, D, H, W)`` logits for the
    overlapping regions WT, TC, ET (sigmoid per channel). D, H, W must be multiples of
    ``2 ** (len(channels) - 1)``.
    """
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=3, channels=channels,
                strides=(2,) * (len(channels) - 1), num_res_units=num_res_units,
                norm="instance")


@dataclass
class Segmenter(SegInfo):
    """A loaded segmentation model: :class:`SegInfo` plus the U-Net (in eval mode) and its
    widths."""

    net: nn.Module = field(kw_only=True)
    channels: tuple[int, ...] = field(default=(16, 32, 64, 128), kw_only=True)

    @torch.inference_mode()
    def logits(self, image: np.ndarray, overlap: float = 0.25, batch_size: int = 2
               ) -> np.ndarray:
        """``(C, D, H, W)`` float32 -> ``(3, D, H, W)`` float32 WT/TC/ET logits (Gaussian
        sliding window over :attr:`patch`: MONAI's on its own grid, else the NumPy one of
        :mod:`mrimaster.segmentation.sliding_window` on :attr:`grid`, as the exported graph
        runs it)."""
        device = next(self.net.parameters()).device
        if self.grid != "monai":
            def net(batch: np.ndarray) -> np.ndarray:
                out = self.net(torch.from_numpy(batch).to(device))
                return np.asarray(out.float().cpu().numpy(), np.float32)

            return sliding_window(np.ascontiguousarray(image, np.float32), self.patch, net,
                                  overlap, batch_size, self.grid)
        x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
        out = sliding_window_inference(x, self.patch, batch_size, self.net, overlap=overlap,
                                       mode="gaussian", progress=sys.stderr.isatty())
        assert isinstance(out, torch.Tensor)
        return out[0].float().cpu().numpy()


def save_segmenter(path: Path, seg: Segmenter) -> None:
    state = {k: v.detach().cpu() for k, v in seg.net.state_dict().items()}
    blob: dict[str, Any] = {"format": FORMAT, **seg.info_dict(), "channels": list(seg.channels),
                            "state_dict": state}
    with replaced_whole(path) as tmp:  # a model.pt is re-saved in place (its recorded grid)
        torch.save(blob, tmp)


def load_segmenter(path: Path, device: str = "cpu") -> Segmenter:
    """Read a file written by :func:`save_segmenter` (or the ``model.pt`` of a run folder)."""
    path = resolve_model_path(path, Path("."))
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files
        raise ModelError(f"{path} is not a readable model file ({type(exc).__name__})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path} is not an MRIMaster segmentation model")
    net = build_unet(len(blob["modalities"]), tuple(blob["channels"]))
    net.load_state_dict(blob["state_dict"])
    net.to(device).eval()
    return Segmenter(**info_from_dict(blob), net=net, channels=tuple(blob["channels"]))
