"""Model files: a network's weights plus what is needed to use it (``model.pt``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrimaster.errors import ModelError
from mrimaster.inference.forward import TorchRuntime
from mrimaster.inference.runtime import ClassifierInfo
from mrimaster.models.registry import MODELS, build_model

FORMAT = "mrimaster-classifier/1"


@dataclass
class Classifier(ClassifierInfo):
    """A loaded classification model: its network (keyword ``net``, in eval mode) and what
    :class:`~mrimaster.inference.runtime.ClassifierInfo` describes."""

    net: nn.Module = field(kw_only=True)

    @property
    def runtime(self) -> TorchRuntime:
        """The network as a :class:`~mrimaster.inference.runtime.Runtime`."""
        return TorchRuntime(self.net)


def _arrays_to_tensors(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, dict):
        return {k: _arrays_to_tensors(v) for k, v in obj.items()}
    return obj


def _tensors_to_arrays(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: _tensors_to_arrays(v) for k, v in obj.items()}
    return obj


def save_classifier(path: Path, clf: Classifier) -> None:
    """Write ``clf`` to ``path``, safe to load with ``weights_only``.

    Floating-point tensors are stored as float16 (half the size; EfficientNet-Lite0 fits the
    10 MB limit for shipped models) and widened back to float32 on load; the relative rounding
    error of 5e-4 per weight does not change metrics measurably, and every metric the project
    records is computed from a model read back from its file.
    """
    state = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
             .contiguous() for k, v in clf.net.state_dict().items()}
    torch.save({"format": FORMAT, "arch": clf.arch, "classes": list(clf.classes),
                "image_size": clf.image_size, "temperature": float(clf.temperature),
                "referral": clf.referral, "meta": clf.meta, "state_dict": state,
                "ood": _arrays_to_tensors(clf.ood)}, path)


def load_classifier(path: Path, device: str = "cpu") -> Classifier:
    """Read a model file written by :func:`save_classifier`.

    Raises:
        ModelError: missing, corrupt or foreign file, or unknown architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign/corrupt files
        raise ModelError(f"{path} is not a readable model file ({type(exc).__name__})",
                         "pass a model.pt written by `mrimaster train`") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path} is not an MRIMaster classifier file",
                         "pass a model.pt written by `mrimaster train`")
    if blob["arch"] not in MODELS:
        raise ModelError(f"{path} uses unknown architecture {blob['arch']!r}")
    net = build_model(blob["arch"], len(blob["classes"]), pretrained=False,
                      image_size=blob["image_size"])
    net.load_state_dict(blob["state_dict"])
    net.to(device).eval()
    return Classifier(blob["arch"], list(blob["classes"]), int(blob["image_size"]),
                      float(blob.get("temperature", 1.0)), blob.get("referral"),
                      dict(blob.get("meta", {})), _tensors_to_arrays(blob.get("ood")), net=net)
