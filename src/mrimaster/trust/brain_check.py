"""Is this a brain MRI slice at all? A small, separate check that runs before the classifier.

The classifier's own out-of-distribution checks (:mod:`mrimaster.trust.ood`) look at the file
(size, blank, colour) and at the classifier's features; a grayscale picture that is not an MRI
slice (a terrain map, a disk, a gradient, noise) can pass both and be shown a class. This check
is trained for that question alone: brain MRI slices of every source in the shared data
(positives) against many kinds of images that are not (:mod:`mrimaster.data.non_mri`), with
some kinds held out of training to measure how it does on kinds it has never seen.

The model, and why: a tiny convolutional network on a 64x64 thumbnail of the classifier's own
prepared slice (crop to the head, pad, resize: :func:`mrimaster.data.images.prepare_slice`):
four 3x3 convolutions (16, 32, 64, 64 channels; batch norm folded in; ReLU; 2x2 max-pooling
after the first three), then global average and max pooling (the max catches a small patch of
text or pattern), a linear layer and a sigmoid; about 60 k parameters, 0.25 MB. A CNN rather
than hand-made features because the negatives differ from MRI in texture and layout in too many
ways to list (text strokes, periodic patterns, photo edges, hill-shading). It runs in ONNX
Runtime on one thread (``model.onnx``, when the ``fast`` extra is installed, as for serving)
or else in the NumPy forward pass written here (same logits to 1e-4): no torch in serving.
One thread on purpose: on a busy CPU, a BLAS or ONNX thread pool waiting for cores costs more
than these small convolutions (the model card gives the measured milliseconds). Training, in
PyTorch, is :mod:`mrimaster.training.brain_check`; ``mrimaster train-brain-check`` runs it.

The decision: reject when ``p < threshold``. The threshold is stored with the weights; it is
chosen on MRI slices held out of training so that almost no real slice is rejected (see the
model card in ``models/brain-check``).

Files of a model folder: ``weights.npz`` (``conv{i}_w`` ``(O, C, 3, 3)`` float32, ``conv{i}_b``
``(O,)`` float32, ``fc_w`` ``(1, D)``, ``fc_b`` ``(1,)``), the same network as ``model.onnx``
(input ``x`` ``(N, 64, 64, 1)``, output ``logit`` ``(N,)``) and ``brain_check.json``
(``threshold``, ``input_size``, provenance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from mrimaster.errors import ModelError

INPUT_SIZE = 64
"""Side of the thumbnail the network sees, in pixels."""
CHANNELS: tuple[int, ...] = (16, 32, 64, 64)
"""Output channels of the four convolutions (2x2 max-pooling after all but the last)."""
FOLDER = "brain-check"
"""Name of the shipped model's folder under the models folder."""
WEIGHTS = "weights.npz"
ONNX = "model.onnx"
META = "brain_check.json"


def thumbnail(prepared: np.ndarray) -> np.ndarray:
    """Prepared slices (any side) -> the network's thumbnails.

    Args:
        prepared: ``(N, S, S)`` uint8 slices from :func:`~mrimaster.data.images.prepare_slice`.

    Returns:
        ``(N, 64, 64)`` uint8 (box-filtered: every source pixel counts once).
    """
    images = np.asarray(prepared, dtype=np.uint8)
    if images.ndim != 3:
        raise ValueError(f"expected (N, S, S) uint8 slices, got shape {images.shape}")
    if images.shape[1:] == (INPUT_SIZE, INPUT_SIZE):
        return images
    return np.stack([np.asarray(Image.fromarray(im).resize((INPUT_SIZE, INPUT_SIZE),
                                                           Image.Resampling.BOX))
                     for im in images]) if len(images) else np.zeros((0, INPUT_SIZE,
                                                                      INPUT_SIZE), np.uint8)


def to_input(thumbs: np.ndarray) -> np.ndarray:
    """``(N, 64, 64)`` uint8 -> ``(N, 64, 64, 1)`` float32 in [-2, 2] (``4 (x / 255 - 0.5)``),
    the network's input (the training code feeds the same values, channels first)."""
    return ((np.asarray(thumbs, np.float32) / 255.0 - 0.5) * 4.0)[..., None]


def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Same-padded 3x3 convolution (cross-correlation, as PyTorch) of ``(N, H, W, C)``."""
    n, h, wd, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = sliding_window_view(xp, (3, 3), axis=(1, 2))  # (N, H, W, C, 3, 3)
    # einsum, not matmul: BLAS would hand these small products to a thread pool, which on a
    # busy CPU waits for cores far longer than the products take
    out = np.einsum("nk,ok->no", cols.reshape(n * h * wd, c * 9), w.reshape(w.shape[0], c * 9)
                    ) + b
    return out.reshape(n, h, wd, w.shape[0])


def forward(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of the network (batch norm already folded into the convolutions).

    Args:
        weights: As in ``weights.npz``.
        x: ``(N, 64, 64, 1)`` float32 from :func:`to_input`.

    Returns:
        ``(N,)`` float32 logits (positive: brain MRI).
    """
    for i in range(len(CHANNELS)):
        x = np.maximum(_conv3x3(x, weights[f"conv{i}_w"], weights[f"conv{i}_b"]), 0)
        if i < len(CHANNELS) - 1:
            n, h, w, c = x.shape
            x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    pooled = np.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=1)
    return (pooled @ weights["fc_w"].T + weights["fc_b"])[:, 0].astype(np.float32)


@dataclass
class BrainCheck:
    """The brain-MRI check: weights, threshold and provenance.

    Attributes:
        weights: Arrays of :func:`forward`.
        threshold: Reject when the probability is below this, in (0, 1).
        meta: Provenance and metrics (``brain_check.json``).
    """

    weights: dict[str, np.ndarray]
    threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    session: Any = None

    @property
    def runtime(self) -> str:
        """``onnxruntime`` (when the session is there) or ``numpy``."""
        return "numpy" if self.session is None else "onnxruntime"

    @classmethod
    def load(cls, folder: Path) -> BrainCheck:
        """Read a model folder (``weights.npz`` and ``brain_check.json``).

        Raises:
            ModelError: a file is missing or unreadable.
        """
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / META).is_file():
            raise ModelError(f"the brain-MRI check is not at {folder} (needs {WEIGHTS} and "
                             f"{META})", "reinstall mrimaster (it ships models/brain-check), "
                             "set MRIMASTER_MODELS_DIR to the folder holding brain-check/, or "
                             "train one with `mrimaster train-brain-check`")
        try:
            meta = json.loads((folder / META).read_text())
            with np.load(folder / WEIGHTS) as blob:
                weights = {k: np.asarray(blob[k], np.float32) for k in blob.files}
            threshold = float(meta["threshold"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"the brain-MRI check at {folder} is unreadable "
                             f"({type(exc).__name__}: {exc})", "reinstall mrimaster or "
                             "retrain with `mrimaster train-brain-check`") from exc
        missing = [k for k in (*(f"conv{i}_{p}" for i in range(len(CHANNELS)) for p in "wb"),
                               "fc_w", "fc_b") if k not in weights]
        if missing or not 0 < threshold < 1:
            raise ModelError(f"the brain-MRI check at {folder} is damaged (missing "
                             f"{missing or 'nothing'}, threshold {threshold})",
                             "retrain with `mrimaster train-brain-check`")
        return cls(weights, threshold, meta, onnx_session(folder / ONNX))

    def save(self, folder: Path) -> None:
        """Write ``weights.npz`` and ``brain_check.json`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {k: v.astype(np.float32) for k, v in self.weights.items()}
        np.savez(folder / WEIGHTS, **arrays)
        meta = {**self.meta, "threshold": self.threshold, "input_size": INPUT_SIZE,
                "channels": list(CHANNELS)}
        (folder / META).write_text(json.dumps(meta, indent=2) + "\n")

    def score(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Probability that each image is a brain MRI slice.

        Args:
            images: ``(N, S, S)`` uint8 prepared slices (any ``S``; 64 is used as is).

        Returns:
            ``(N,)`` float64 in [0, 1].
        """
        thumbs = thumbnail(images)
        logits = [self._logits(to_input(thumbs[i:i + batch_size]))
                  for i in range(0, len(thumbs), batch_size)]
        z = np.concatenate(logits).astype(np.float64) if logits else np.zeros(0)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))

    def _logits(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            return forward(self.weights, x)
        return np.asarray(self.session.run(None, {"x": x})[0], np.float32)

    def rejects(self, p: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: not a brain MRI slice (``p < threshold``)."""
        return np.asarray(p) < self.threshold

    def reason(self, p: float) -> str:
        """What a rejected image's status says."""
        return f"not a brain MRI slice (brain-MRI check p = {p:.2f} < {self.threshold:.2f})"


def onnx_session(path: Path) -> Any:
    """An ONNX Runtime session of ``model.onnx`` on one thread (``None`` without ONNX Runtime
    or the file: :func:`forward` in NumPy then gives the same logits)."""
    if not Path(path).is_file():
        return None
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a tiny graph: threads only add waiting on a busy CPU
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=4)
def _load_cached(folder: str, stamp: float) -> BrainCheck:
    return BrainCheck.load(Path(folder))


def load_brain_check(models_dir: Path) -> BrainCheck:
    """The check ``<models_dir>/brain-check`` (the shipped one under the settings' models
    folder), read once per process (again when its weights file changes).

    Raises:
        ModelError: the folder or a file in it is missing: never skipped silently.
    """
    folder = Path(models_dir) / FOLDER
    weights = folder / WEIGHTS
    stamp = weights.stat().st_mtime if weights.is_file() else -1.0
    return _load_cached(str(folder.resolve()), stamp)
