"""Reading DICOM slices: one file -> a dataset (tags) and its pixels as a display image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.data.images import window_to_uint8
from mrimaster.errors import ImageLoadError

MAX_DICOM_PIXELS = 40_000_000
"""Largest declared pixel count of one DICOM (rows x columns x samples x frames), checked from
the header before any pixel is decoded (the same cap as PNG and JPEG uploads)."""

BITS_ALLOCATED = (1, 8, 16, 32, 64)
"""The ``BitsAllocated`` values DICOM defines; anything else is a corrupt or hostile header."""


def is_dicom(path: Path) -> bool:
    """Whether ``path`` has the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: Path, name: str | None = None) -> Any:
    """The pydicom ``Dataset`` of ``path``.

    Args:
        name: How to name the file in an error (the user's file name; default ``path.name``).

    Raises:
        ImageLoadError: not a readable DICOM file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ImageLoadError(f"{name or path.name}: not a readable DICOM file "
                             f"({type(exc).__name__})",
                             "export the slice again from the PACS or viewer") from exc


def _int_tag(ds: Any, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    try:
        return int(default if value is None or value == "" else value)
    except (TypeError, ValueError):
        return -1


def declared_pixels(ds: Any, name: str = "the DICOM file") -> int:
    """Check the image size a DICOM header declares, before its pixels are decoded.

    Args:
        ds: A pydicom ``Dataset`` (pixel data not decoded yet).
        name: How to name the file in an error.

    Returns:
        The declared pixel count, ``Rows x Columns x SamplesPerPixel x NumberOfFrames``
        (1 to :data:`MAX_DICOM_PIXELS`).

    Raises:
        ImageLoadError: a size that is missing, zero, negative or over the cap, or a
            ``BitsAllocated`` DICOM does not define.
    """
    rows, cols = _int_tag(ds, "Rows", 0), _int_tag(ds, "Columns", 0)
    samples, frames = _int_tag(ds, "SamplesPerPixel", 1), _int_tag(ds, "NumberOfFrames", 1)
    bits = _int_tag(ds, "BitsAllocated", 0)
    hint = "export the slice again from the PACS or viewer"
    if min(rows, cols, samples, frames) < 1:
        raise ImageLoadError(f"{name} declares an invalid image size ({rows} rows, {cols} "
                             f"columns, {samples} samples, {frames} frames)", hint)
    if bits not in BITS_ALLOCATED:
        raise ImageLoadError(f"{name} declares {bits} bits per pixel (DICOM allows "
                             f"{', '.join(map(str, BITS_ALLOCATED))})", hint)
    total = rows * cols * samples * frames
    if total > MAX_DICOM_PIXELS:
        raise ImageLoadError(f"{name} declares {cols}x{rows} pixels x {samples} samples x "
                             f"{frames} frames: too large (at most {MAX_DICOM_PIXELS:,} pixels)",
                             "upload a single MRI slice, not a multi-frame or huge image")
    return total


def _first(value: Any) -> float:
    """A window value, which DICOM may store as several (one per window)."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, MultiValue | list | tuple) else value)


def dicom_to_gray(ds: Any, name: str = "the DICOM file") -> np.ndarray:
    """The slice of a DICOM dataset as a display image.

    The stored values are rescaled (slope, intercept), then windowed with the file's window
    centre and width when it has them, else between the 0.5th and 99.5th percentiles.

    Returns:
        ``(H, W)`` uint8.

    Raises:
        ImageLoadError: no pixel data, a declared size over the cap (checked before decoding),
            a multi-frame or colour image, or a compression this installation cannot decode.
    """
    if "PixelData" not in ds:
        raise ImageLoadError(f"{name} has no pixel data (it is a report or a structured "
                             "document, not an image)", "upload the image slice itself")
    declared_pixels(ds, name)
    try:
        pixels = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # pydicom raises several types for undecodable pixel data
        raise ImageLoadError(f"{name}: its pixel data cannot be decoded ({exc})",
                             "export it uncompressed (explicit VR little endian)") from exc
    if pixels.ndim != 2:
        raise ImageLoadError(f"{name} holds {pixels.shape} pixels, not one grayscale slice",
                             "upload a single-frame slice; a series goes in a 3D study")
    pixels = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0)
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    lo = hi = None
    if centre is not None and width is not None:
        c, w = _first(centre), _first(width)
        lo, hi = c - w / 2, c + w / 2
    gray = window_to_uint8(pixels, lo, hi)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        gray = 255 - gray
    return gray
