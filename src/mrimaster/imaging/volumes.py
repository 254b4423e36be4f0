"""One DICOM series -> its frames' geometry -> volumes (classic single-frame and enhanced
multi-frame alike).

A *frame* is one 2D image: a whole classic file, or one frame of an enhanced multi-frame file
(its geometry in the per-frame functional groups ``PlanePositionSequence`` /
``PlaneOrientationSequence`` / ``PixelMeasuresSequence``, or in the shared ones). Frames are
ordered along the slice normal (``row x column`` direction cosines), never by file name or
instance number; frames at the same position are the volumes of a 4D series. The affine comes
from DICOM PS3.3 C.7.6.2.1.1, turned from DICOM's LPS to NIfTI's RAS axes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrimaster.errors import DataError

MAX_VOXELS = 200_000_000
"""Largest series decoded (rows x columns x frames; a brain MRI volume has a few million)."""
POSITION_TOLERANCE_MM = 0.01
"""Frames closer than this along the slice normal are at the same position."""


@dataclass
class Frame:
    """One 2D image of a series and its geometry (LPS, mm)."""

    path: Path
    index: int | None  # frame number in an enhanced file (0-based), None for a classic file
    position: np.ndarray
    orientation: np.ndarray  # row cosines then column cosines
    spacing: np.ndarray  # (between rows, between columns)
    slope: float
    intercept: float
    shape: tuple[int, int]  # (rows, columns)


def _item(seq_owner: Any, keyword: str) -> Any:
    seq = seq_owner.get(keyword) if seq_owner is not None else None
    return seq[0] if seq else None


def _group(per_frame: Any, shared: Any, keyword: str) -> Any:
    return _item(per_frame, keyword) or _item(shared, keyword)


def frames_of(path: Path, ds: Any, name: str) -> list[Frame]:
    """The frames of one file (``ds``: its header, read without pixels).

    Raises:
        DataError: a frame without its position, orientation or pixel spacing.
    """
    shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    try:
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared = _item(ds, "SharedFunctionalGroupsSequence")
            out = []
            for k, pf in enumerate(ds.PerFrameFunctionalGroupsSequence):
                pos = _group(pf, shared, "PlanePositionSequence")
                ori = _group(pf, shared, "PlaneOrientationSequence")
                meas = _group(pf, shared, "PixelMeasuresSequence")
                trans = _group(pf, shared, "PixelValueTransformationSequence")
                if pos is None or ori is None or meas is None:
                    raise AttributeError("a frame has no PlanePosition, PlaneOrientation or "
                                         "PixelMeasures functional group")
                out.append(Frame(path, k, np.asarray(pos.ImagePositionPatient, float),
                                 np.asarray(ori.ImageOrientationPatient, float),
                                 np.asarray(meas.PixelSpacing, float),
                                 float(trans.get("RescaleSlope", 1) or 1) if trans else 1.0,
                                 float(trans.get("RescaleIntercept", 0) or 0) if trans else 0.0,
                                 shape))
            return out
        return [Frame(path, None, np.asarray(ds.ImagePositionPatient, float),
                      np.asarray(ds.ImageOrientationPatient, float),
                      np.asarray(ds.PixelSpacing, float),
                      float(ds.get("RescaleSlope", 1) or 1),
                      float(ds.get("RescaleIntercept", 0) or 0), shape)]
    except (AttributeError, TypeError, ValueError) as exc:
        missing = [t for t in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
                   if "PerFrameFunctionalGroupsSequence" not in ds and t not in ds]
        what = f"it has no {', '.join(missing)}" if missing else str(exc)
        raise DataError(f"series {name!r}: {path.name} lacks its geometry ({what})",
                        "export the series with its position and orientation tags") from exc


@dataclass
class Layout:
    """Frames arranged as ``volumes[v][k]``: volume ``v``, slice ``k`` along the normal."""

    volumes: list[list[Frame]]
    n_positions: int

    @property
    def n_volumes(self) -> int:
        return len(self.volumes)


def layout(frames: list[Frame], name: str) -> Layout:
    """Arrange ``frames`` into volumes: sorted along the slice normal, frames at the same
    position are successive volumes (in file and frame order).

    Raises:
        DataError: frames of different sizes or orientations (a localizer, or several
            acquisitions in one series), or positions holding different numbers of frames.
    """
    if len({f.shape for f in frames}) != 1:
        raise DataError(f"series {name!r} mixes image sizes",
                        "export one acquisition per series")
    orients = np.asarray([f.orientation for f in frames])
    if np.abs(orients - orients[0]).max() > 1e-3:
        raise DataError(f"series {name!r} mixes slice orientations (a multi-plane localizer, "
                        "or several acquisitions in one series)", "export one acquisition "
                        "per series")
    normal = np.cross(frames[0].orientation[:3], frames[0].orientation[3:])
    where = np.asarray([f.position @ normal for f in frames])
    order = sorted(range(len(frames)), key=lambda i: (where[i], str(frames[i].path),
                                                       frames[i].index or 0))
    stacks: list[list[Frame]] = []
    last = None
    for i in order:
        if last is None or where[i] - last > POSITION_TOLERANCE_MM:
            stacks.append([])
            last = where[i]
        stacks[-1].append(frames[i])
    counts = {len(s) for s in stacks}
    if len(counts) != 1:
        raise DataError(f"series {name!r}: its positions hold {min(counts)} to {max(counts)} "
                        "images each (missing images, or several acquisitions in one series)",
                        "export one acquisition, complete, per series")
    n_vol = counts.pop()
    return Layout([[s[v] for s in stacks] for v in range(n_vol)], len(stacks))


def affine(frames: list[Frame], name: str) -> np.ndarray:
    """The RAS affine of one volume's frames (sorted along the normal).

    Raises:
        DataError: fewer than 2 positions, unevenly spaced slices, or slices stacked
            obliquely to their own plane (gantry tilt: the affine would be sheared; a drift
            across the whole stack under half a pixel is taken as rounding and removed).
    """
    p = np.asarray([f.position for f in frames])
    normal = np.cross(frames[0].orientation[:3], frames[0].orientation[3:])
    gaps = np.diff(p @ normal)
    if len(p) < 2 or gaps.min() <= 1e-3 or gaps.max() - gaps.min() > 0.01 * gaps.max():
        span = f"{gaps.min():.2f}-{gaps.max():.2f} mm" if len(gaps) else "one slice"
        raise DataError(f"series {name!r}: its slices are not evenly spaced ({span}: missing "
                        "slices, or not a volume)", "export one acquisition, complete, per "
                        "series")
    row_dir, col_dir = frames[0].orientation[:3], frames[0].orientation[3:]
    spacing = frames[0].spacing
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]  # along a row: next column, column spacing
    lps[:3, 1] = col_dir * spacing[0]  # down a column: next row, row spacing
    lps[:3, 2] = (p[-1] - p[0]) / (len(p) - 1)
    lps[:3, 3] = p[0]
    span = p[-1] - p[0]
    drift = float(np.linalg.norm(span - normal * float(span @ normal)))  # sideways, mm
    if drift > 0.5 * float(min(spacing)):  # a gantry-tilted (sheared) acquisition
        tilt = float(np.degrees(np.arctan2(drift, abs(float(span @ normal)))))
        raise DataError(f"series {name!r}: its slices are stacked at {tilt:.1f} degrees to "
                        "their own plane (a gantry-tilted acquisition, a sheared volume the "
                        "registration and the network cannot use)", "export the series "
                        "reconstructed without tilt (or as the scanner's orthogonal "
                        "reformat)")
    # under half a pixel of drift over the whole stack (rounded positions): the slices are
    # taken as stacked along their normal, so the grid stays orthogonal
    lps[:3, 2] = normal * float(span @ normal) / (len(p) - 1)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def voxels(frames: list[Frame], name: str) -> np.ndarray:
    """The rescaled voxels of one volume, ``(columns, rows, slices)`` float32.

    Raises:
        DataError: too many voxels declared, no pixel data, or pixels that cannot be decoded
            (compressed syntaxes decode through pylibjpeg's plugins; RLE natively).
    """
    import pydicom

    rows, cols = frames[0].shape
    if rows * cols * len(frames) > MAX_VOXELS:
        raise DataError(f"series {name!r} declares {rows * cols * len(frames):,} voxels (at "
                        f"most {MAX_VOXELS:,})", "import one MRI series at a time")
    cache: dict[Path, np.ndarray] = {}
    out = np.empty((cols, rows, len(frames)), np.float32)
    for k, f in enumerate(frames):
        if f.path not in cache:
            cache.clear()  # one file's pixels held at a time (frames come file by file)
            try:
                ds = pydicom.dcmread(f.path)
                if "PixelData" not in ds:
                    raise DataError(f"series {name!r}: {f.path.name} has no pixel data",
                                    "export it again")
                cache[f.path] = np.asarray(ds.pixel_array)
            except DataError:
                raise
            except Exception as exc:  # pydicom raises several types for undecodable pixels
                raise DataError(f"series {name!r}: its pixel data cannot be decoded "
                                f"({type(exc).__name__}: {exc})",
                                "install pylibjpeg, pylibjpeg-libjpeg and pylibjpeg-openjpeg, "
                                "or export it uncompressed") from exc
        pixels = cache[f.path]
        plane = pixels[f.index] if f.index is not None and pixels.ndim == 3 else pixels
        if plane.shape != (rows, cols):
            raise DataError(f"series {name!r}: {f.path.name} holds {plane.shape} pixels, not "
                            f"the declared {(rows, cols)}", "export it again")
        out[:, :, k] = (plane.astype(np.float32) * f.slope + f.intercept).T
    return out
