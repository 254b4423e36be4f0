"""Batched prediction on image files, with the trust fields of every prediction.

DICOM slices are read as the web app reads an uploaded one (:func:`mrimaster.data.dicom.
read_dicom` and :func:`~mrimaster.data.dicom.dicom_to_gray`: rescale, window, MONOCHROME1),
so a file gets the same class from ``mrimaster predict`` as from the upload page.

No torch here: the classifier runs in whichever runtime it was loaded for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.dicom import dicom_to_gray, is_dicom, read_dicom
from mrimaster.data.folders import Skipped, load_slices
from mrimaster.data.images import (
    RawStats,
    image_suffixes,
    load_grayscale,
    prepare_slice,
    raw_stats,
)
from mrimaster.errors import ImageLoadError
from mrimaster.inference.runtime import ClassifierModel
from mrimaster.settings import load_settings
from mrimaster.trust.brain_check import BrainCheck, load_brain_check
from mrimaster.trust.ood import input_problem
from mrimaster.trust.referral import BROKEN, TrustRule, assess

log = logging.getLogger(__name__)


def _looks_dicom(path: Path) -> bool:
    """A ``.dcm`` file, or one with the DICOM preamble (the web app's test)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        return is_dicom(path)
    except OSError:
        return False


def _collect(inputs: Sequence[Path]) -> tuple[list[tuple[Path, bool]], list[Skipped]]:
    """Expand files and folders (recursively, sorted) into ``(path, is DICOM)``.

    A file named explicitly is always tried; in a folder, files with an image suffix Pillow
    reads, ``.dcm`` files and files with the DICOM preamble are taken, others skipped."""
    suffixes = image_suffixes()
    found: list[tuple[Path, bool]] = []
    skipped: list[Skipped] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.is_file()):
                if path.name.startswith("."):
                    continue
                if path.suffix.lower() in suffixes:
                    found.append((path, False))
                elif _looks_dicom(path):
                    found.append((path, True))
                else:
                    skipped.append(Skipped(path, "not an image file type "
                                           f"({path.suffix or 'no suffix'})"))
        elif item.is_file():
            found.append((item, _looks_dicom(item)))
        else:
            skipped.append(Skipped(item, "no such file or folder"))
    return found, skipped


def _frames(ds: Any) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def read_gray(path: Path) -> np.ndarray:
    """One slice file as ``predict`` reads it, before preparation: ``(H, W)`` uint8 (DICOM
    through :func:`dicom_to_gray`, anything else through Pillow).

    Raises:
        ImageLoadError: not a readable slice.
    """
    if _looks_dicom(path):
        return dicom_to_gray(read_dicom(path, str(path)), str(path))
    return load_grayscale(path)


def decode_dicom_slice(path: Path, size: int) -> tuple[np.ndarray, RawStats] | ImageLoadError:
    """One DICOM slice as the web app reads it, prepared for a model of input ``size``.

    The web app classifies the PNG of :func:`dicom_to_gray`'s image: its statistics are
    those of that grayscale image (no colour).

    Returns:
        ``(prepared (size, size) uint8, RawStats)``, or the error that says why the file is
        not one 2D slice (multi-frame, no pixel data, undecodable, not DICOM); never raises.
    """
    name = str(path)
    ds = None
    try:
        ds = read_dicom(path, name)
        gray = dicom_to_gray(ds, name)
    except ImageLoadError as exc:
        frames = 1 if ds is None else _frames(ds)
        if frames > 1:
            return ImageLoadError(f"{exc.message} (a multi-frame DICOM with {frames} frames: "
                                  "a volume, not one slice)", exc.hint)
        return exc
    except Exception as exc:  # a malformed header must skip, not crash
        return ImageLoadError(f"{name}: not a readable DICOM slice "
                              f"({type(exc).__name__}: {exc})")
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    return prepare_slice(gray, size), raw_stats(rgb)


def predict_files(clf: ClassifierModel, inputs: Sequence[Path], batch_size: int = 64,
                  progress: bool = False, brain_check: BrainCheck | None = None,
                  log_skipped: bool = True
                  ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Classify image files and folders (searched recursively).

    Images are anything Pillow reads; DICOM slices (``.dcm``, or any file with the DICOM
    preamble) are read as the web app reads them (see :func:`decode_dicom_slice`).

    Before the classifier's decision, the brain-MRI check (:mod:`mrimaster.trust.brain_check`)
    looks at every image that passed the input checks: one it rejects gets status ``reject``
    with the check's probability in the reason, and no class.

    Args:
        brain_check: The check (default: ``<models dir>/brain-check`` of the settings read
            from the environment now, the shipped one; a missing one is an error, never
            skipped).
        log_skipped: Log each skipped file as a warning (the CLI lists them itself).

    Returns:
        ``(rows, skipped)``: one row per decoded image with ``path``, ``status`` (``ok``,
        ``refer``: refer to a radiologist, ``reject``: not a brain MRI slice the model knows),
        ``reason``, ``prediction`` and ``confidence`` (calibrated; ``None`` when rejected: no
        class is shown), ``uncertainty`` (under the model's referral method), ``distance``
        (feature distance to the training images, per dimension; ``None`` when the model has
        no distance check), ``referred`` (status is not ``ok``), ``p_<class>`` for every
        class (``None`` when rejected) and ``brain_mri_p`` (the brain-MRI check's probability
        in [0, 1]); and the files skipped, with the reason.
    """
    check = brain_check or load_brain_check(load_settings().models_dir)
    found, skipped = _collect(inputs)
    slices = load_slices([p for p, dcm in found if not dcm], None, clf.image_size,
                         progress=progress, skipped=skipped, log_skipped=log_skipped)
    images: list[np.ndarray] = []
    stats: list[RawStats] = []
    paths: list[Path] = []
    dicom_skipped: list[Skipped] = []
    k = 0  # the next decoded image file; load_slices keeps the order of its input
    for path, dcm in found:
        if dcm:
            out = decode_dicom_slice(path, clf.image_size)
            if isinstance(out, ImageLoadError):
                dicom_skipped.append(Skipped.of(path, out))
                if log_skipped:
                    log.warning("skipped %s: %s", path, dicom_skipped[-1].reason)
                continue
            image, raw = out
        elif k < len(slices.paths) and slices.paths[k] == path:
            image, raw = slices.images[k], slices.stats[k]
            k += 1
        else:  # could not be decoded: in slices.skipped
            continue
        images.append(image)
        stats.append(raw)
        paths.append(path)
    rows: list[dict[str, Any]] = []
    skipped_rows = [{"path": str(s.path), "reason": s.reason}
                    for s in [*slices.skipped, *dicom_skipped]]
    if not paths:
        return rows, skipped_rows
    batch = np.stack(images)
    brain_p = check.score(batch)
    result = assess(clf.runtime, TrustRule.of(clf), batch, stats, batch_size)
    for i, (raw, p_mri) in enumerate(zip(stats, brain_p, strict=True)):
        # the input checks speak first (colour, blank, too small), then the brain-MRI check
        if input_problem(raw) is None and result.reason[i] != BROKEN and check.rejects(p_mri):
            result.status[i], result.reason[i] = "reject", check.reason(float(p_mri))
    for i, path in enumerate(paths):
        p, shown = result.probs[i], result.status[i] != "reject"
        dist = float(result.distance[i])
        row: dict[str, Any] = {
            "path": str(path), "status": result.status[i], "reason": result.reason[i],
            "prediction": clf.classes[int(p.argmax())] if shown else None,
            "confidence": float(p.max()) if shown else None,
            "uncertainty": float(result.uncertainty[i]),
            "distance": None if np.isnan(dist) else dist,
            "referred": result.status[i] != "ok"}
        row.update({f"p_{c}": float(p[k]) if shown else None for k, c in enumerate(clf.classes)})
        row["brain_mri_p"] = float(brain_p[i])
        rows.append(row)
    return rows, skipped_rows
