"""Pictures of the imaging stage a doctor judges at a glance: each registered sequence over the
reference, and the brain mask.

``registration_<role>.png``: three planes (axial, coronal, sagittal) through the brain's centre.
Top row: the reference in grey with the registered sequence's edges drawn over it in colour
(edges that follow the reference's anatomy mean a good registration; a shifted or rotated
outline is seen at once). Bottom row: a checkerboard of the two (each normalised to its own
1st-99th percentile), the classic registration check: structures run on across the squares'
borders when the two agree. ``brain_mask.png``: the reference with the brain mask's outline.
Drawn with Pillow (:mod:`mrimaster.imaging.panels`).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mrimaster.imaging.panels import Layer, Panel, save_grid

ROLE_NAMES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1-Gd", "t2": "T2"}
PLANES = ((2, "axial"), (1, "coronal"), (0, "sagittal"))
CHECKER_MM = 16.0
"""Side of the checkerboard's squares (mm)."""
EDGE_COLOURS = ((0.0, 0.0, 0.0, 0.0), (1.0, 1.0, 0.0, 0.8))
"""The registered sequence's edges: yellow."""
OUTLINE_COLOURS = ((0.0, 0.0, 0.0, 0.0), (1.0, 0.0, 1.0, 0.9))
"""The brain mask's outline: magenta."""


def _canonical(img: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y, z)`` float32 voxels in RAS orientation and their ``(3,)`` voxel sizes."""
    can = nib.as_closest_canonical(img)
    return (np.asarray(can.dataobj, np.float32),
            np.asarray(nib.affines.voxel_sizes(can.affine), np.float64))


def display_window(data: np.ndarray) -> tuple[float, float]:
    """The grey-level window of a volume: the 1st and 99th percentiles of its non-zero voxels,
    taken from every second voxel along each axis (the same window to a fraction of a grey
    level, an eighth of the work) unless that leaves fewer than 1000; ``(0, 1)`` for an empty
    volume. One window per volume, so that every panel of a picture shows it alike."""
    sample = data[::2, ::2, ::2] if data.ndim == 3 else data
    inside = sample[sample != 0]
    if inside.size < 1000:
        inside = data[data != 0]
    if inside.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(inside, [1, 99])
    return float(lo), float(max(float(hi), float(lo) + 1e-6))


def windowed(data: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """``data`` mapped to [0, 1] float32 through ``window`` (:func:`display_window`), its exact
    zeros (outside the head, or outside the brain of a skull-stripped, z-scored network input
    whose brain has mean 0) black, not the grey of the window's middle."""
    lo, hi = window
    out = np.subtract(data, np.float32(lo), dtype=np.float32)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0, 1, out=out)
    out[data == 0] = 0
    return out


def _normalised(data: np.ndarray) -> np.ndarray:
    """``data`` windowed to [0, 1] (:func:`display_window`, :func:`windowed`; an empty volume
    stays 0)."""
    return windowed(data, display_window(data))


def plane(arr: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D slice of a canonical (RAS) array, rotated for display (anterior/superior up): a
    view (``np.take`` copies a whole non-contiguous volume first: 30-50 ms a slice)."""
    return np.rot90(arr[(slice(None),) * axis + (index,)])


def _edges(cut: np.ndarray, zooms: tuple[float, float]) -> np.ndarray:
    """Bool edge map of one 2D plane: gradient magnitude (1 mm Gaussian) above its 90th
    percentile inside the plane's non-zero part (computed per displayed plane: cheap)."""
    smooth = ndimage.gaussian_filter(cut, [1.0 / z for z in zooms])
    grad = np.hypot(ndimage.sobel(smooth, axis=0), ndimage.sobel(smooth, axis=1))
    inside = grad[cut > 0]
    return np.asarray(grad > (np.percentile(inside, 90) if inside.size else np.inf))


def _plane_zooms(zooms: np.ndarray, axis: int) -> tuple[float, float]:
    """Voxel sizes of :func:`plane`'s rows and columns."""
    rows, cols = [float(z) for a, z in enumerate(zooms) if a != axis][::-1]
    return rows, cols


def _centre(data: np.ndarray) -> np.ndarray:
    found = np.argwhere(data > 0)
    return (found.mean(axis=0) if len(found) else np.array(data.shape) / 2).round().astype(int)


def _aspect(zooms: np.ndarray, axis: int) -> float:
    rows, cols = [z for a, z in enumerate(zooms) if a != axis][::-1]
    return float(rows / cols)


def registration_figures(images: dict[str, nib.Nifti1Image], reference: str, out_dir: Path
                         ) -> list[Path]:
    """``registration_<role>.png`` for every role but ``reference`` (all images on one grid).

    Returns:
        The written files.
    """
    ref, zooms = _canonical(images[reference])
    ref_n = _normalised(ref)
    centre = _centre(ref)
    written = []
    ref_name = ROLE_NAMES.get(reference, reference)
    for role, img in images.items():
        if role == reference:
            continue
        moving, _ = _canonical(img)
        mov_n = _normalised(moving)
        name_of = ROLE_NAMES.get(role, role)
        edges, checks = [], []
        for axis, name in PLANES:
            aspect = _aspect(zooms, axis)
            a, b = plane(ref_n, axis, centre[axis]), plane(mov_n, axis, centre[axis])
            outline = _edges(plane(moving, axis, centre[axis]), _plane_zooms(zooms, axis))
            edges.append(Panel(a, f"{name}: {name_of} edges on {ref_name}",
                               [Layer(outline, EDGE_COLOURS)], aspect))
            rows, cols = _plane_zooms(zooms, axis)
            squares = (np.indices(a.shape) * np.array([rows, cols])[:, None, None]
                       // CHECKER_MM).sum(axis=0) % 2
            checks.append(Panel(np.where(squares == 0, a, b), f"{name}: checkerboard",
                                aspect=aspect))
        written.append(save_grid(
            edges + checks, 3, out_dir / f"registration_{role}.png",
            f"{name_of} registered onto the {ref_name}: outlines should follow the anatomy, "
            "structures run on across the squares", cell=260))
    return written


def brain_mask_figure(reference: nib.Nifti1Image, mask: nib.Nifti1Image, out_dir: Path
                      ) -> Path:
    """``brain_mask.png``: the reference with the brain mask's outline, three planes."""
    ref, zooms = _canonical(reference)
    inside, _ = _canonical(mask)
    inside_b = inside > 0
    centre = _centre(inside_b.astype(np.float32))
    ref_n = _normalised(ref)
    panels = []
    for axis, name in PLANES:
        cut = plane(inside_b, axis, centre[axis])
        line = cut & ~ndimage.binary_erosion(cut)
        panels.append(Panel(plane(ref_n, axis, centre[axis]), name,
                            [Layer(line, OUTLINE_COLOURS)], _aspect(zooms, axis)))
    volume_ml = float(inside_b.sum() * np.prod(zooms) / 1000)
    return save_grid(panels, 3, out_dir / "brain_mask.png",
                     f"brain mask ({volume_ml:.0f} mL): the outline should follow the brain's "
                     "surface, without scalp or skull", cell=260)
