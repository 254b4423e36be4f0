"""CAM from the forward pass alone: Grad-CAM at the last feature map, without a backward pass.

For a network that ends with global average pooling (GAP) and a linear head, Grad-CAM at the
pooled feature map equals CAM (Zhou et al., CVPR 2016, "Learning Deep Features for
Discriminative Localization", Eq. 2; Selvaraju et al., ICCV 2017, arXiv:1610.02391, Sec. 3,
"Grad-CAM generalizes CAM"). With activations ``A^k`` of shape ``(h, w)``, ``Z = h w``, head
weights ``w_ck`` and bias ``b_c``, the class score (logit, before softmax) is

    y^c = sum_k w_ck (1/Z) sum_ij A^k_ij + b_c

so its gradient is the same at every position,

    d y^c / d A^k_ij = w_ck / Z,

and the Grad-CAM channel weight (Selvaraju et al., Eq. 1) is

    alpha_k^c = (1/Z) sum_ij d y^c / d A^k_ij = (1/Z) sum_ij w_ck / Z = w_ck / Z.

The Grad-CAM map (Eq. 2) is therefore

    L^c = ReLU(sum_k alpha_k^c A^k) = (1/Z) ReLU(sum_k w_ck A^k) = (1/Z) M_c,

with ``M_c`` the CAM of Zhou et al. (Eq. 2; ReLU added, as Grad-CAM does): the two differ only by
the positive factor ``1/Z``, which the min-max (here: divide by the maximum) normalisation of a
display removes. :func:`gap_linear_cam` keeps the ``1/Z`` so that its maps equal
:class:`mrimaster.explain.cam.GradCAM`'s values, not only their normalised display.

Everything needed is in one forward pass (the feature map ``A`` and the logits); dropout before
the head is the identity in eval mode. Whether a layer qualifies is checked on every pass: the
logits must equal the head applied to the spatial mean of that layer's output
(:func:`check_gap_linear`); other layers need gradients (:mod:`mrimaster.explain.cam`).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mrimaster.errors import MRIMasterError
from mrimaster.explain.cam import CAMResult, resolve_layer
from mrimaster.inference.forward import head_of
from mrimaster.inference.runtime import Head


def gap_linear_cam(features: np.ndarray, weight: np.ndarray, classes: np.ndarray
                   ) -> np.ndarray:
    """Grad-CAM maps at a feature map followed by GAP and a linear head, from the weights.

    Args:
        features: ``(B, K, h, w)`` float32 activations ``A`` of the layer before GAP.
        weight: ``(C, K)`` float32 head weights ``w``.
        classes: ``(B,)`` int class index ``c`` explained in each image.

    Returns:
        ``(B, h, w)`` float32 >= 0: ``ReLU(sum_k (w_ck / Z) A^k)``, ``Z = h w`` (equal to
        Grad-CAM's map, see the module docstring).
    """
    z = features.shape[2] * features.shape[3]
    alpha = weight[np.asarray(classes, dtype=np.intp)].astype(np.float32) / z  # (B, K)
    maps = np.einsum("bk,bkhw->bhw", alpha, features.astype(np.float32, copy=False))
    return np.maximum(maps, 0, dtype=np.float32)


def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Weights of a 1D bilinear resize, as PyTorch's ``F.interpolate(mode="bilinear",
    align_corners=False)``: pixel centres aligned, source positions below 0 clamped to 0.

    Returns:
        ``(n_out, n_in)`` float32, each row non-negative and summing to 1.
    """
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    rows = np.arange(n_out)
    out = np.zeros((n_out, n_in), np.float64)
    np.add.at(out, (rows, lo), 1.0 - frac)
    np.add.at(out, (rows, hi), frac)
    return out.astype(np.float32)


def upsample_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(B, h, w)`` maps -> ``(B, H, W)`` float32, bilinear (PyTorch's, see
    :func:`bilinear_matrix`); maps >= 0 stay >= 0."""
    rows = bilinear_matrix(maps.shape[1], size[0])
    cols = bilinear_matrix(maps.shape[2], size[1])
    return np.einsum("Hh,bhw,Ww->bHW", rows, maps.astype(np.float32, copy=False), cols)


def check_gap_linear(features: np.ndarray, head: Head, logits: np.ndarray, layer: str,
                     tol: float = 1e-3) -> None:
    """Check that the logits are the head applied to the spatial mean of ``features``: only
    then is the CAM Grad-CAM (module docstring).

    Args:
        features: ``(B, K, h, w)`` float32.
        head: The network's linear head, weight ``(C, K)``.
        logits: ``(B, C)`` float32 of the same forward pass.
        layer: The layer's name, for the error.
        tol: Allowed difference, relative to ``max(1, max |logit|)`` (float32 sums).

    Raises:
        MRIMasterError: the layer is not followed by GAP and the linear head.
    """
    if features.shape[1] != head.weight.shape[1]:
        raise MRIMasterError(f"layer {layer!r} has {features.shape[1]} channels, the linear "
                             f"head takes {head.weight.shape[1]}: CAM does not apply there",
                             "use Grad-CAM (mrimaster.explain.cam.GradCAM) for this layer")
    pooled = features.mean(axis=(2, 3), dtype=np.float64)
    expected = pooled @ head.weight.T.astype(np.float64) + head.bias
    gap = float(np.abs(expected - logits).max()) if logits.size else 0.0
    if gap > tol * max(1.0, float(np.abs(logits).max(initial=0.0))):
        raise MRIMasterError(f"the logits are not the linear head of the mean of layer "
                             f"{layer!r} (largest difference {gap:.3g}): CAM does not apply",
                             "use Grad-CAM (mrimaster.explain.cam.GradCAM) for this layer")


def choose_classes(logits: np.ndarray, target: int | Sequence[int] | np.ndarray | None
                   ) -> np.ndarray:
    """``(B,)`` int64 classes to explain: ``target`` (one for all or one per image), else the
    arg-max of the ``(B, C)`` logits.

    Raises:
        MRIMasterError: a class index out of range.
    """
    n, n_classes = logits.shape
    if target is None:
        return logits.argmax(axis=1).astype(np.int64)
    wanted = np.full(n, target, np.int64) if np.isscalar(target) else np.asarray(target,
                                                                                  np.int64)
    if wanted.shape != (n,) or ((wanted < 0) | (wanted >= n_classes)).any():
        raise MRIMasterError(f"class index {wanted.tolist()} out of range 0..{n_classes - 1}")
    return wanted


class ForwardCAM:
    """CAM (= Grad-CAM, module docstring) at a layer followed by GAP and the linear head, from
    one forward pass under :func:`torch.inference_mode`, computed in NumPy.

    Standalone (hook registered and removed in the call)::

        result = ForwardCAM(net)(x)               # default layer, predicted class

    Or entered beside Grad-CAMs of other layers, reusing their forward pass::

        with ForwardCAM(net) as fcam, GradCAM(net, "_blocks.5") as gcam:
            (deep_other,) = explain_layers([gcam], x)
            last = fcam.result(x.shape[-2:], deep_other.logits, deep_other.classes)

    Args:
        net: A classifier returning logits ``(B, C)``; put in eval mode here.
        layer: Name of the module whose output is pooled into the head; default
            :func:`mrimaster.explain.cam.default_layer`.
    """

    def __init__(self, net: nn.Module, layer: str | None = None) -> None:
        self.net = net.eval()
        self.layer_name, self.layer = resolve_layer(net, layer)
        self.head = head_of(net)
        self._features: list[np.ndarray] = []
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def __enter__(self) -> ForwardCAM:
        self._features = []
        self._handle = self.layer.register_forward_hook(self._keep)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise MRIMasterError(f"layer {self.layer_name!r} does not output feature maps "
                                 "(B, K, h, w)", "choose the layer before global pooling")
        self._features.append(output.detach().float().cpu().numpy())

    def __call__(self, x: Tensor, target: int | Sequence[int] | None = None) -> CAMResult:
        """Maps for a batch from one forward pass.

        Args:
            x: ``(B, 3, H, W)`` float32 model input.
            target: Class to explain, one for all or one per image; default the predicted one.
        """
        device = next(self.net.parameters()).device
        entered = self._handle is not None
        if not entered:
            self.__enter__()
        try:
            self._features = []
            with torch.inference_mode():
                logits = self.net(x.to(device)).float().cpu().numpy()
        finally:
            if not entered:
                self.__exit__(None, None, None)
        return self.result(x.shape[-2:], logits, target)

    def result(self, size: Sequence[int], logits: np.ndarray,
               target: int | Sequence[int] | np.ndarray | None = None) -> CAMResult:
        """The maps of the forward pass just run (by :meth:`__call__` or by any other pass
        while entered).

        Args:
            size: ``(H, W)`` of the model input, for the upsampled maps.
            logits: ``(B, C)`` logits of that pass.
            target: Class(es) to explain; default the arg-max of ``logits``.

        Raises:
            MRIMasterError: no pass, or the layer ran more than once; the layer is not
                followed by GAP and the linear head (:func:`check_gap_linear`).
        """
        if len(self._features) != 1:
            raise MRIMasterError(f"layer {self.layer_name!r} ran {len(self._features)} times "
                                 "in the last pass", "run one forward pass per result")
        features = self._features.pop()
        check_gap_linear(features, self.head, logits, self.layer_name)
        classes = choose_classes(logits, target)
        maps = gap_linear_cam(features, self.head.weight, classes)
        height, width = (int(s) for s in size)
        return CAMResult(maps, upsample_bilinear(maps, (height, width)), classes,
                         logits.astype(np.float32, copy=False))


REDUCED_PRECISION_TOL = 0.05
""":func:`check_gap_linear`'s tolerance for an int8 or bf16 graph: its head runs at reduced
precision while the map is weighed with the fp32 head, so the logits differ from the head of
the pooled map by about the quantisation step (0.023 of logits up to 3.0 on 12 seed slices,
``openvino-int8``); fp32 graphs keep the default 1e-3."""


def graph_cam(runtime: Any, images: np.ndarray,
              target: int | Sequence[int] | np.ndarray | None = None) -> CAMResult:
    """CAM (= Grad-CAM at the last feature map, module docstring) from an exported graph's own
    forward pass, without PyTorch: the graph returns the feature map its pooling reads
    (:meth:`mrimaster.inference.onnx_runtime.GraphRuntime.feature_map`), weighed here with the
    head's weights.

    Against PyTorch's :class:`ForwardCAM` on 12 seed slices (upsampled maps): ``onnx-fp32``
    and ``openvino-fp32`` within 0.16% of the map's peak; ``openvino-int8`` correlation 0.999,
    largest difference 5% of the peak (``tests/explain/test_graph_cam.py``).

    Args:
        runtime: A :class:`~mrimaster.inference.onnx_runtime.GraphRuntime`.
        images: ``(B, S, S)`` uint8 prepared slices.
        target: Class(es) to explain; default the graph's arg-max.

    Raises:
        MRIMasterError: the graph pools no feature map into its head (then use PyTorch).
    """
    logits, features = runtime.feature_map(images)
    head = runtime.head()
    from mrimaster.inference.graph import VARIANTS

    tol = 1e-3 if VARIANTS[runtime.name].precision == "fp32" else REDUCED_PRECISION_TOL
    check_gap_linear(features, head, logits, "the graph's pooled feature map", tol)
    classes = choose_classes(logits, target)
    maps = gap_linear_cam(features, head.weight, classes)
    return CAMResult(maps, upsample_bilinear(maps, (images.shape[1], images.shape[2])),
                     classes, logits)
