"""What every inference runtime provides, in NumPy only.

A runtime maps prepared slices to logits and penultimate features. Two implement it:
:class:`mrimaster.inference.forward.TorchRuntime` (PyTorch, always available) and
:class:`mrimaster.inference.onnx_runtime.GraphRuntime` (the exported graph in ONNX Runtime or
OpenVINO, ``pip install mrimaster[fast]``). Everything above this layer (the trust decision,
``predict``) sees only this interface, so the ONNX path never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")
"""Values of ``--runtime``: ``auto`` takes the fastest validated variant of the model's ONNX
export whose engine is installed, else torch (see :mod:`mrimaster.inference.loading`)."""


@dataclass
class Head:
    """The classifier head ``logits = features @ weight.T + bias`` and the dropout before it.

    Attributes:
        weight: ``(C, D)`` float32.
        bias: ``(C,)`` float32.
        dropout: Rate of the dropout applied to the features in training (0 if none).
    """

    weight: np.ndarray
    bias: np.ndarray
    dropout: float


class Runtime(Protocol):
    """A network ready to run on prepared slices."""

    name: str
    """``torch`` or a variant of :data:`mrimaster.inference.graph.VARIANTS`."""

    def forward(self, images: np.ndarray, batch_size: int = 64
                ) -> tuple[np.ndarray, np.ndarray]:
        """``(N, S, S)`` uint8 slices -> ``((N, C) float32 logits, (N, D) float32 features)``."""
        ...

    def head(self) -> Head:
        """The classifier head (for MC dropout on the features)."""
        ...


@dataclass
class ClassifierInfo:
    """What a classifier carries besides its network, whichever runtime runs it.

    Attributes:
        arch: Registry name.
        classes: Label of each output, in order.
        image_size: Input side in pixels.
        temperature: Softmax temperature (1.0 = uncalibrated).
        referral: ``{"method", "threshold", "target_error", ...}``: refer an image to a
            radiologist when its uncertainty under ``method`` exceeds ``threshold``; ``None``
            until calibrated (see :mod:`mrimaster.training.fit_trust`).
        meta: Provenance (run, data, metrics...).
        ood: ``{"distance": FeatureDistance fields, "refer_above", "reject_above"}`` (see
            :mod:`mrimaster.trust.ood`); ``None`` until calibrated.
    """

    arch: str
    classes: list[str]
    image_size: int
    temperature: float = 1.0
    referral: dict[str, Any] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    ood: dict[str, Any] | None = None


class ClassifierModel(Protocol):
    """What inference needs of a loaded classifier, whichever runtime runs it."""

    arch: str
    classes: list[str]
    image_size: int
    temperature: float
    referral: dict[str, Any] | None
    ood: dict[str, Any] | None
    meta: dict[str, Any]

    @property
    def runtime(self) -> Runtime: ...


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``; ``(N, C)`` float64 rows summing to 1."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
