"""Reading DICOM slices: one file -> a dataset (tags) and its pixels as a display image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.errors import ImageLoadError


def is_dicom(path: Path) -> bool:
    """Whether ``path`` has the DICOM Part 10 preamble (``DICM`` at byte 128)."""
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: Path) -> Any:
    """The pydicom ``Dataset`` of ``path``.

    Raises:
        ImageLoadError: not a readable DICOM file.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise ImageLoadError(f"{path.name}: not a readable DICOM file ({type(exc).__name__})",
                             "export the slice again from the PACS or viewer") from exc


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
        ImageLoadError: no pixel data, a multi-frame or colour image, or a compression this
            installation cannot decode.
    """
    if "PixelData" not in ds:
        raise ImageLoadError(f"{name} has no pixel data (it is a report or a structured "
                             "document, not an image)", "upload the image slice itself")
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
    if centre is not None and width is not None:
        c, w = _first(centre), _first(width)
        lo, hi = c - w / 2, c + w / 2
    else:
        lo, hi = np.percentile(pixels, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1
    scaled = np.clip((pixels - lo) / (hi - lo), 0, 1) * 255
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled.round().astype(np.uint8)
