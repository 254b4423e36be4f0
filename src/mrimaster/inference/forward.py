"""Forward passes on preprocessed slices: logits, penultimate features, softmax.

The lowest layer of inference: :mod:`mrimaster.trust` and :mod:`mrimaster.inference.predict`
both build on it, so it imports neither.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from mrimaster.data.transforms import eval_batch
from mrimaster.errors import ModelError


def head_layer(net: nn.Module) -> nn.Linear:
    """The network's last linear layer (its classifier head): its input is the penultimate
    feature vector."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("the network has no linear classifier head",
                         "use a registered classifier (`mrimaster models`)")
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


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``; ``(N, C)`` float64 rows summing to 1."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
