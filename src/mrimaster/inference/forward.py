"""PyTorch forward passes on preprocessed slices: logits and penultimate features.

:class:`TorchRuntime` is the torch implementation of
:class:`mrimaster.inference.runtime.Runtime`; :mod:`mrimaster.trust` builds on that interface and
imports nothing from here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from mrimaster.data.transforms import eval_batch
from mrimaster.errors import ModelError
from mrimaster.inference.runtime import Head


def head_layer(net: nn.Module) -> nn.Linear:
    """The network's last linear layer (its classifier head): its input is the penultimate
    feature vector."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("the network has no linear classifier head",
                         "use a registered classifier (`mrimaster models list`)")
    return linears[-1]


def _forward_batches(net: nn.Module, images: np.ndarray, batch_size: int,
                     with_features: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits (and penultimate features) of ``net`` in its current train/eval state."""
    device = next(net.parameters()).device
    feats: list[np.ndarray] = []
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured.append(inputs[0].detach())

    handle = head_layer(net).register_forward_hook(hook) if with_features else None
    outs = []
    try:
        for start in range(0, images.shape[0], batch_size):
            x = eval_batch(images[start:start + batch_size]).to(device).contiguous(
                memory_format=torch.channels_last)
            outs.append(net(x).float().cpu().numpy())
            if captured:
                feats.append(captured.pop().float().flatten(1).cpu().numpy())
    finally:
        if handle is not None:
            handle.remove()
    n_out = outs[0].shape[1] if outs else 0
    logits = np.concatenate(outs) if outs else np.zeros((0, n_out), np.float32)
    if not with_features:
        return logits, None
    dim = head_layer(net).in_features
    return logits, np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)


@torch.inference_mode()
def predict_logits(net: nn.Module, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Run the network on preprocessed slices.

    Args:
        net: A classifier network; put in eval mode here.
        images: ``(N, S, S)`` uint8 slices from :func:`mrimaster.data.images.prepare_slice`.
        batch_size: Images per forward pass.

    Returns:
        ``(N, C)`` float32 logits.
    """
    net.eval()
    return _forward_batches(net, images, batch_size, False)[0]


@torch.inference_mode()
def predict_logits_and_features(net: nn.Module, images: np.ndarray, batch_size: int = 64
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Logits and penultimate features (the input of :func:`head_layer`) in one pass.

    Returns:
        ``((N, C) float32 logits, (N, D) float32 features)``.
    """
    net.eval()
    logits, feats = _forward_batches(net, images, batch_size, True)
    assert feats is not None
    return logits, feats


def head_of(net: nn.Module) -> Head:
    """The network's :class:`~mrimaster.inference.runtime.Head` as NumPy arrays."""
    head = head_layer(net)
    rates = [m.p for m in net.modules() if isinstance(m, nn.Dropout)]
    bias = (head.bias.detach().float().cpu().numpy() if head.bias is not None
            else np.zeros(head.out_features, np.float32))
    return Head(head.weight.detach().float().cpu().numpy(), bias,
                float(rates[-1]) if rates else 0.0)


class TorchRuntime:
    """:class:`~mrimaster.inference.runtime.Runtime` running a PyTorch network (eval mode)."""

    name = "torch"

    def __init__(self, net: nn.Module) -> None:
        self.net = net

    def forward(self, images: np.ndarray, batch_size: int = 64
                ) -> tuple[np.ndarray, np.ndarray]:
        return predict_logits_and_features(self.net, images, batch_size)

    def head(self) -> Head:
        return head_of(self.net)
