"""Batched prediction on slices and on image files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mrimaster.data.folders import collect_image_paths, load_slices
from mrimaster.data.transforms import eval_batch
from mrimaster.models.checkpoint import Classifier


@torch.inference_mode()
def predict_logits_stochastic(net: nn.Module, images: np.ndarray, batch_size: int = 64
                              ) -> np.ndarray:
    """Like :func:`predict_logits` but keeps each module's train/eval flag (MC dropout)."""
    return _forward_batches(net, images, batch_size)


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
    return _forward_batches(net, images, batch_size)


def _forward_batches(net: nn.Module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits of ``net`` in its current train/eval state, on the device of its parameters."""
    device = next(net.parameters()).device
    outs = []
    for start in range(0, images.shape[0], batch_size):
        x = eval_batch(images[start:start + batch_size]).to(device).contiguous(
            memory_format=torch.channels_last)
        outs.append(net(x).float().cpu().numpy())
    n_out = outs[0].shape[1] if outs else 0
    return np.concatenate(outs) if outs else np.zeros((0, n_out), np.float32)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``; ``(N, C)`` float64 rows summing to 1."""
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict_probs(clf: Classifier, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """``(N, C)`` class probabilities, with the model's temperature applied."""
    return softmax(predict_logits(clf.net, images, batch_size), clf.temperature)


def predict_files(clf: Classifier, inputs: Sequence[Path], batch_size: int = 64,
                  progress: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Classify image files and folders (searched recursively).

    Returns:
        ``(rows, skipped)``: one row per decoded image with ``path``, ``prediction``,
        ``confidence`` (calibrated), ``uncertainty`` (under the model's referral method),
        ``referred`` (true: refer to a radiologist; false when the model has no referral
        rule) and ``p_<class>`` for every class; and the files skipped, with the reason.
    """
    from mrimaster.explain.referral import uncertainty

    paths, skipped = collect_image_paths(inputs)
    slices = load_slices(paths, None, clf.image_size, progress=progress, skipped=skipped)
    rows: list[dict[str, Any]] = []
    skipped_rows = [{"path": str(s.path), "reason": s.reason} for s in slices.skipped]
    if not slices.paths:
        return rows, skipped_rows
    probs = predict_probs(clf, slices.images, batch_size)
    referral = clf.referral or {}
    unc = uncertainty(referral.get("method", "softmax"), clf.net, slices.images,
                      clf.temperature, probs)
    for path, p, u in zip(slices.paths, probs, unc, strict=True):
        row: dict[str, Any] = {"path": str(path), "prediction": clf.classes[int(p.argmax())],
                               "confidence": float(p.max()), "uncertainty": float(u),
                               "referred": bool("threshold" in referral
                                                and u > referral["threshold"])}
        row.update({f"p_{c}": float(p[i]) for i, c in enumerate(clf.classes)})
        rows.append(row)
    return rows, skipped_rows
