"""Class activation maps: Grad-CAM and Grad-CAM++ sharing one base that owns the hooks.

Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391): for class score ``y^c`` (the logit,
before softmax) and activations ``A^k`` of a convolutional layer,

    alpha_k^c = 1/Z sum_ij d y^c / d A^k_ij                      (Eq. 1)
    L^c = ReLU(sum_k alpha_k^c A^k)                               (Eq. 2)

The target layer can be any module whose output is a feature map; the default is a rectified
block output (after normalisation and activation), where the maps are the most localised.

Grad-CAM++ (Chattopadhay et al., WACV 2018, Eq. 19 with the exponential score, whose higher
derivatives are powers of the first): with ``g = d y^c / d A^k_ij``,

    a_ij^kc = g^2 / (2 g^2 + sum_ab A^k_ab g^3),   w_k^c = sum_ij a_ij^kc ReLU(g).

A variant overrides :meth:`CAM.channel_weights` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrimaster.errors import MRIMasterError


def conv_layers(net: nn.Module) -> dict[str, nn.Conv2d]:
    """Convolutional layers by qualified name, in forward (registration) order."""
    return {name: m for name, m in net.named_modules() if isinstance(m, nn.Conv2d)}


def default_layer(net: nn.Module) -> str:
    """The layer explained by default: the network's ``cam_layer`` attribute (a rectified block
    output, after normalisation and activation, as in Selvaraju et al. and pytorch-grad-cam),
    else its last convolutional layer."""
    name = getattr(net, "cam_layer", None)
    return str(name) if name else list(conv_layers(net))[-1]


def resolve_layer(net: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """Any module with a 4D ``(B, K, h, w)`` output, by qualified name (default:
    :func:`default_layer`).

    Raises:
        MRIMasterError: no module of that name; the valid names are listed.
    """
    modules = dict(net.named_modules())
    if name is None:
        name = default_layer(net)
    if not name or name not in modules:
        raise MRIMasterError(f"layer {name!r} does not exist",
                             "choose a module name, e.g. one of: " + ", ".join(
                                 [default_layer(net), *conv_layers(net)]))
    return name, modules[name]


@dataclass
class CAMResult:
    """Maps for one batch.

    Attributes:
        maps: ``(B, h, w)`` float32 >= 0 at the layer's own resolution.
        upsampled: ``(B, H, W)`` float32 >= 0, bilinearly resized to the input size.
        classes: ``(B,)`` class index each map explains.
        logits: ``(B, C)`` class scores of the forward pass (before softmax).
    """

    maps: np.ndarray
    upsampled: np.ndarray
    classes: np.ndarray
    logits: np.ndarray


class CAM:
    """Base class: hooks one layer, runs the forward and backward passes, releases the hooks.

    Use as a context manager so the hooks are always removed::

        with GradCAM(net, "features.9") as cam:
            result = cam(x)

    Args:
        net: A classifier returning logits ``(B, C)``; put in eval mode here.
        layer: Name of any module with feature-map output; default :func:`default_layer`.
    """

    def __init__(self, net: nn.Module, layer: str | None = None) -> None:
        self.net = net.eval()
        self.layer_name, self.layer = resolve_layer(net, layer)
        self._activations: Tensor | None = None
        self._gradients: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._calls = 0

    def __enter__(self) -> CAM:
        self._handle = self.layer.register_forward_hook(self._forward_hook)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def release(self) -> None:
        """Remove the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._activations = self._gradients = None

    def _forward_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor
                      ) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise MRIMasterError(f"layer {self.layer_name!r} does not output feature maps "
                                 "(B, K, h, w)", "choose a convolutional block or activation")
        if torch.is_grad_enabled() and not output.requires_grad:
            # nothing upstream needs gradients (frozen layers, plain input): start the graph here
            output = output.detach().requires_grad_(True)
        self._activations = output
        self._calls += 1
        # Hand later layers a copy, so that an in-place op (ReLU(inplace=True)) cannot alter A.
        return output.clone()

    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """``(B, K, h, w)`` activations and gradients -> ``(B, K)`` channel weights."""
        raise NotImplementedError

    def __call__(self, x: Tensor, target: int | list[int] | None = None) -> CAMResult:
        """Maps for a batch.

        Args:
            x: ``(B, 3, H, W)`` float32 model input.
            target: Class to explain, one for all or one per image; default the predicted one.
        """
        return explain_layers([self], x, target)[0]

    def _result(self, x: Tensor, logits: Tensor, classes: Tensor) -> CAMResult:
        """The maps of this layer from the activations and gradients of the last pass."""
        assert self._activations is not None and self._gradients is not None
        acts, grads = self._activations.detach(), self._gradients.detach()
        weights = self.channel_weights(acts, grads)
        maps = F.relu((weights[:, :, None, None] * acts).sum(dim=1))
        up = F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear",
                           align_corners=False)[:, 0].clamp_min(0)
        self._activations = self._gradients = None
        return CAMResult(maps.float().cpu().numpy(), up.float().cpu().numpy(),
                         classes.cpu().numpy(), logits.detach().float().cpu().numpy())


def explain_layers(cams: Sequence[CAM], x: Tensor, target: int | list[int] | None = None
                   ) -> list[CAMResult]:
    """Maps at several layers of one network from a single forward and backward pass (the
    gradient of the class score reaches every hooked layer in the same backward pass). The
    backward pass computes only the gradients with respect to the hooked activations: it stops
    at the shallowest hooked layer and computes no weight gradients (``.grad`` is untouched).

    Args:
        cams: Entered CAMs (``with``) of one network, one per layer.
        x: ``(B, 3, H, W)`` float32 model input.
        target: Class to explain, one for all or one per image; default the predicted one.

    Returns:
        One :class:`CAMResult` per CAM, in order.
    """
    if any(c._handle is None for c in cams):
        raise RuntimeError("use the CAM as a context manager: `with GradCAM(...) as cam`")
    net = cams[0].net
    device = next(net.parameters()).device
    x = x.detach().to(device)
    for c in cams:
        c._calls = 0
    with torch.enable_grad():
        logits = net(x)
        acts: list[Tensor] = []
        for c in cams:
            if c._calls != 1 or c._activations is None:  # a reused module has no single map
                raise MRIMasterError(f"layer {c.layer_name!r} runs {c._calls} times per "
                                     "forward pass", "choose a module that runs once, e.g. a "
                                     "convolution or a block")
            acts.append(c._activations)
        n_classes = logits.shape[1]
        if target is None:
            classes = logits.argmax(dim=1)
        else:
            wanted = [target] * x.shape[0] if isinstance(target, int) else list(target)
            if any(not 0 <= c < n_classes for c in wanted):
                raise MRIMasterError(f"class index {wanted} out of range 0..{n_classes - 1}")
            classes = torch.tensor(wanted, dtype=torch.long, device=device)
        score = logits.gather(1, classes[:, None]).sum()  # y^c, pre-softmax
        grads = torch.autograd.grad(score, acts)  # d y^c / d A^k_ij, nothing else
        for c, g in zip(cams, grads, strict=True):
            c._gradients = g
    return [c._result(x, logits, classes) for c in cams]


class GradCAM(CAM):
    """Grad-CAM: weights are the spatial mean of the gradients (Eq. 1)."""

    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        return gradients.mean(dim=(2, 3))


class GradCAMPlusPlus(CAM):
    """Grad-CAM++: positive gradients weighted by the closed-form alphas (Eq. 19)."""

    def channel_weights(self, activations: Tensor, gradients: Tensor) -> Tensor:
        g2, g3 = gradients.pow(2), gradients.pow(3)
        denom = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        return (alpha * F.relu(gradients)).sum(dim=(2, 3))


CAM_METHODS: dict[str, type[CAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}


def get_cam(method: str) -> type[CAM]:
    """A CAM class by name."""
    if method not in CAM_METHODS:
        raise MRIMasterError(f"unknown method {method!r}",
                             f"choose one of: {', '.join(CAM_METHODS)}")
    return CAM_METHODS[method]
