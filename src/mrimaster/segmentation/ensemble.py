"""The cross-validation fold ensemble (nnU-Net's default inference) and its disagreement.

A segmentation model folder may hold, beside the final model, ``folds/fold_K/`` with each
cross-validation fold's exported network (``model.onnx`` + ``model.onnx.json``, and
``model.pt`` where the folder budget allows). :func:`load_ensemble` loads them as one
:class:`SegEnsemble`: its members' sigmoid probabilities are averaged (Isensee et al. 2021,
nnU-Net: the five fold models' softmax outputs averaged), and their disagreement is measured
per voxel by the mutual information between the prediction and the member
(:func:`mutual_information`; Lakshminarayanan et al. 2017 for deep ensembles, the BALD
decomposition of Houlsby et al. 2011, eq. 2).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any  # noqa: F401  (pdoc resolves SegInfo's inherited annotations here)

import numpy as np

from mrimaster.errors import ModelError
from mrimaster.segmentation.runtime import (
    SEG_VARIANTS,
    SegInfo,
    SegModel,
    info_from_dict,
    load_seg_variant,
    seg_variant_problem,
)

log = logging.getLogger(__name__)

FOLDS_DIR = "folds"
"""Sub-folder of a model folder that holds the fold members (``fold_0``, ``fold_1``, ...)."""


def sigmoid(logits: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Element-wise logistic function in float32 (inputs rounded to float32 first), without
    overflow warnings: ``0.5 (1 + tanh(x / 2))``, computed in one fresh array (a volume's
    temporaries cost more in page faults than the arithmetic), or with ``in_place`` in
    ``logits`` itself when it is a writeable float32 array (a caller that has no further use
    for the logits: a fresh volume of them costs about 0.08 s on 2 cores, as much as the
    arithmetic)."""
    writeable = isinstance(logits, np.ndarray) and logits.flags.writeable
    out = (logits if in_place and writeable and logits.dtype == np.float32
           else np.array(logits, dtype=np.float32))
    out *= np.float32(0.5)
    np.tanh(out, out=out)
    out += np.float32(1.0)
    out *= np.float32(0.5)
    return out


@dataclass
class SegEnsemble(SegInfo):
    """Several segmentation networks that vote as one model.

    The :class:`SegInfo` fields (inputs, post-processing, spacing) are the final model's, so
    the inputs are planned and cleaned exactly as for the single model; ``members`` are the
    fold models. :meth:`logits` returns the logit of the members' mean probability, so any
    code written for one model runs the ensemble.
    """

    members: list[SegModel] = field(default_factory=list, kw_only=True)

    def member_probabilities(self, image: np.ndarray, overlap: float = 0.25,
                             batch_size: int | None = None) -> Iterator[np.ndarray]:
        """``(C, D, H, W)`` float32 -> each member's ``(3, D, H, W)`` float32 probabilities
        (``batch_size`` None: each member's own default)."""
        for member in self.members:
            logits = member.logits(image, overlap) if batch_size is None else \
                member.logits(image, overlap, batch_size)
            yield sigmoid(logits, in_place=True)

    def logits(self, image: np.ndarray, overlap: float = 0.25, batch_size: int | None = None
               ) -> np.ndarray:
        total = np.zeros((3, *image.shape[1:]), np.float32)
        for prob in self.member_probabilities(image, overlap, batch_size):
            total += prob
        mean = np.clip(total / len(self.members), 1e-6, 1 - 1e-6)
        return np.log(mean / (1 - mean)).astype(np.float32)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a Bernoulli(p), element-wise; ``p`` in [0, 1], result in [0, 1]."""
    q = np.clip(p.astype(np.float32), 1e-7, 1 - 1e-7)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def mutual_information(probs: list[np.ndarray]) -> np.ndarray:
    """Per-voxel disagreement of several probability maps of one binary region.

    The mutual information between the label and the member (Houlsby et al. 2011, eq. 2):
    the entropy of the mean probability minus the mean of the members' entropies. 0 where
    the members agree (however unsure each is), up to 1 bit where half say 0 and half 1.

    Args:
        probs: Two or more float arrays of one shape, values in [0, 1].

    Returns:
        float32 array of that shape, values in [0, 1].
    """
    if len(probs) < 2:
        raise ValueError("disagreement needs at least two probability maps")
    mean = np.mean(probs, axis=0)
    expected = np.mean([binary_entropy(p) for p in probs], axis=0)
    return np.clip(binary_entropy(mean) - expected, 0.0, 1.0).astype(np.float32)


def fold_folders(folder: Path) -> list[Path]:
    """The fold members' folders of a model folder (``folds/fold_<k>``, ``k`` a whole number),
    in fold order; empty when it has none. Other folders there (``fold_3.old``) are not
    members."""
    return numbered_folds(folder / FOLDS_DIR)


def numbered_folds(root: Path) -> list[Path]:
    """The ``fold_<k>`` folders directly in ``root`` (``k`` a whole number), in fold order;
    empty when ``root`` is not a folder. Used for a model folder's members and for a
    cross-validation run's folds alike."""
    if not root.is_dir():
        return []
    found = [(int(p.name[5:]), p) for p in root.iterdir()
             if p.is_dir() and p.name.startswith("fold_") and p.name[5:].isdigit()]
    return [p for _, p in sorted(found)]


def _load_member(folder: Path, runtime: str) -> SegModel:
    """One fold member in the first usable variant of ``runtime`` (its own export check),
    else PyTorch when the folder has ``model.pt``.

    Raises:
        ModelError: neither is usable (the message says why for each variant).
    """
    from mrimaster.inference.graph import ENGINE_OF_RUNTIME

    problems = []
    for variant in SEG_VARIANTS:
        if variant not in ENGINE_OF_RUNTIME.get(runtime, ()):
            continue
        why = seg_variant_problem(folder, variant)
        if why is None:
            return load_seg_variant(folder, variant)
        problems.append(f"{variant}: {why}")
    if runtime in ("auto", "torch") and (folder / "model.pt").is_file():
        from mrimaster.segmentation.model import load_segmenter

        return load_segmenter(folder / "model.pt")
    raise ModelError(f"fold member {folder.name} cannot run here ("
                     + ("; ".join(problems) or f"no {runtime} variant") + ")",
                     "install the engines with `pip install mrimaster[fast]`, or use --fast "
                     "for the single final model")


def load_ensemble(final: SegInfo, folder: Path, runtime: str = "auto") -> SegEnsemble:
    """The fold members of ``folder`` voting with ``final``'s inputs and post-processing.

    Raises:
        ModelError: the folder has fewer than two fold members, a member takes other
            modalities or patches than the final model or places them on another grid, or a
            member cannot run here.
    """
    folders = fold_folders(folder)
    if len(folders) < 2:
        raise ModelError(f"{folder} holds no fold ensemble ({FOLDS_DIR}/fold_K)",
                         "use --fast, or export the model with its folds (`mrimaster seg "
                         "export`)")
    members = [_load_member(f, runtime) for f in folders]
    for f, m in zip(folders, members, strict=True):
        if list(m.modalities) != list(final.modalities) or tuple(m.patch) != tuple(final.patch):
            raise ModelError(f"fold member {f.name} takes {m.modalities} in {m.patch} patches, "
                             f"the final model {final.modalities} in {final.patch}",
                             "export the folds and the final model from one `seg cv` run")
        if m.grid != final.grid:
            raise ModelError(f"fold member {f.name} places its patches on the {m.grid} grid, "
                             f"the final model on the {final.grid} grid",
                             "export the folds and the final model from one `seg cv` run")
    info = info_from_dict({**final.info_dict(), "meta": {**final.meta, "members": len(members)}})
    names = sorted({m.runtime_name for m in members})
    return SegEnsemble(**info, runtime_name=f"ensemble of {len(members)} ({', '.join(names)})",
                       members=members)
