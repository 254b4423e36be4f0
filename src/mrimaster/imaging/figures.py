"""Pictures of the imaging stage a doctor judges at a glance: each registered sequence over the
reference, and the brain mask.

``registration_<role>.png``: three planes (axial, coronal, sagittal) through the brain's centre.
Top row: the reference in grey with the registered sequence's edges drawn over it in colour
(edges that follow the reference's anatomy mean a good registration; a shifted or rotated
outline is seen at once). Bottom row: a checkerboard of the two (each normalised to its own
1st-99th percentile), the classic registration check: structures run on across the squares'
borders when the two agree. ``brain_mask.png``: the reference with the brain mask's outline.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure
from scipy import ndimage

ROLE_NAMES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1-Gd", "t2": "T2"}
PLANES = ((2, "axial"), (1, "coronal"), (0, "sagittal"))
CHECKER_MM = 16.0
"""Side of the checkerboard's squares (mm)."""


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


def compact_layout(fig: Figure, title_in: float = 0.65, hspace: float = 0.12) -> None:
    """Fixed margins for a grid of image panels with one title each and a figure title above
    (``title_in`` inches). Panel titles are placed with ``y=1.0`` by the callers: matplotlib's
    automatic title placement and ``tight_layout`` measure every axis's extent for every text.
    With this and :func:`_normalised`'s sampled window, a case's overlay, registration and
    brain-mask pictures take 0.68-0.75 s instead of 1.41-1.47 s (BraTS 2015 pat0001, FLAIR and
    T1-Gd, median of 5, 2 cores)."""
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - title_in / fig.get_figheight(),
                        wspace=0.04, hspace=hspace)


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
    for role, img in images.items():
        if role == reference:
            continue
        moving, _ = _canonical(img)
        mov_n = _normalised(moving)
        fig = Figure(figsize=(10, 6.8))
        axes = fig.subplots(2, 3, squeeze=False)
        for col, (axis, name) in enumerate(PLANES):
            aspect = _aspect(zooms, axis)
            top, bottom = axes[0, col], axes[1, col]
            top.imshow(plane(ref_n, axis, centre[axis]), cmap="gray", vmin=0, vmax=1, aspect=aspect)
            edges = _edges(plane(moving, axis, centre[axis]), _plane_zooms(zooms, axis))
            overlay = np.ma.masked_where(~edges, np.ones(edges.shape))
            top.imshow(overlay, cmap="autumn", alpha=0.8, aspect=aspect,
                       interpolation="nearest")
            top.set_title(f"{name}: {ROLE_NAMES.get(role, role)} edges on "
                          f"{ROLE_NAMES.get(reference, reference)}", fontsize=8, y=1.0)
            a, b = plane(ref_n, axis, centre[axis]), plane(mov_n, axis, centre[axis])
            rows, cols = _plane_zooms(zooms, axis)
            squares = (np.indices(a.shape) * np.array([rows, cols])[:, None, None]
                       // CHECKER_MM).sum(axis=0) % 2
            bottom.imshow(np.where(squares == 0, a, b), cmap="gray", vmin=0, vmax=1,
                          aspect=aspect)
            bottom.set_title(f"{name}: checkerboard", fontsize=8, y=1.0)
            top.axis("off")
            bottom.axis("off")
        fig.suptitle(f"{ROLE_NAMES.get(role, role)} registered onto the "
                     f"{ROLE_NAMES.get(reference, reference)}: outlines should follow the "
                     "anatomy, structures run on across the squares", fontsize=9)
        compact_layout(fig)
        path = out_dir / f"registration_{role}.png"
        fig.savefig(path, dpi=80)
        written.append(path)
    return written


def brain_mask_figure(reference: nib.Nifti1Image, mask: nib.Nifti1Image, out_dir: Path
                      ) -> Path:
    """``brain_mask.png``: the reference with the brain mask's outline, three planes."""
    ref, zooms = _canonical(reference)
    inside, _ = _canonical(mask)
    inside_b = inside > 0
    centre = _centre(inside_b.astype(np.float32))
    ref_n = _normalised(ref)
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 3, squeeze=False)
    for col, (axis, name) in enumerate(PLANES):
        aspect = _aspect(zooms, axis)
        ax = axes[0, col]
        ax.imshow(plane(ref_n, axis, centre[axis]), cmap="gray", vmin=0, vmax=1, aspect=aspect)
        cut = plane(inside_b, axis, centre[axis])
        line = cut & ~ndimage.binary_erosion(cut)
        ax.imshow(np.ma.masked_where(~line, np.ones(line.shape)), cmap="cool", alpha=0.9,
                  aspect=aspect, interpolation="nearest")
        ax.set_title(name, fontsize=8, y=1.0)
        ax.axis("off")
    volume_ml = float(inside_b.sum() * np.prod(zooms) / 1000)
    fig.suptitle(f"brain mask ({volume_ml:.0f} mL): the outline should follow the brain's "
                 "surface, without scalp or skull", fontsize=9)
    compact_layout(fig)
    path = out_dir / "brain_mask.png"
    fig.savefig(path, dpi=80)
    return path
