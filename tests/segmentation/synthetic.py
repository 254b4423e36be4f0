"""Small synthetic multimodal cases in each naming layout."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

# BraTS 2021 labels of the synthetic tumour, converted to each convention
_FROM_2021 = {
    "brats2021": {1: 1, 2: 2, 4: 4},
    "brats2015": {1: 1, 2: 2, 4: 4},
    "brats2023": {1: 1, 2: 2, 4: 3},
    "msd": {1: 2, 2: 1, 4: 3},
    "wt": {1: 1, 2: 1, 4: 1},
}
LAYOUTS = {
    "brats2021": ({"flair": "x_flair", "t1": "x_t1", "t1ce": "x_t1ce", "t2": "x_t2"}, "x_seg"),
    "brats2023": ({"flair": "x-t2f", "t1": "x-t1n", "t1ce": "x-t1c", "t2": "x-t2w"}, "x-seg"),
    "brats2015": ({"flair": "Flair_subtrMeanDivStd", "t1ce": "T1c_subtrMeanDivStd"},
                  "OTMultiClass"),
    "wt": ({"flair": "FLAIR", "t1": "T1"}, "GT_W"),
}


def synthetic_arrays(shape: tuple[int, int, int] = (40, 44, 36), seed: int = 0
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four modalities (float32, 0 outside the head) and BraTS 2021 labels {0, 1, 2, 4}."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    centre = rng.uniform(-0.25, 0.25, 3)[:, None, None, None]
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    labels = np.zeros(shape, np.uint8)
    labels[(r < 0.45) & brain] = 2
    labels[r < 0.28] = 4
    labels[r < 0.15] = 1
    base = {"flair": (100, {2: 180, 4: 160, 1: 120}), "t1": (90, {2: 80, 4: 85, 1: 60}),
            "t1ce": (95, {2: 90, 4: 220, 1: 50}), "t2": (110, {2: 200, 4: 150, 1: 170})}
    images = {}
    for m, (tissue, lesion) in base.items():
        img = np.where(brain, tissue, 0).astype(np.float32)
        for lab, value in lesion.items():
            img[labels == lab] = value
        img += np.where(brain, rng.normal(0, 5, shape), 0).astype(np.float32)
        images[m] = img
    return images, labels


def write_case(folder: Path, layout: str = "brats2021", seed: int = 0,
               affine: np.ndarray | None = None, shape: tuple[int, int, int] = (40, 44, 36),
               labelled: bool = True) -> Path:
    """Write a case folder in one of :data:`LAYOUTS`, or ``msd`` (one 4D image)."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
    images, labels = synthetic_arrays(shape, seed)
    conv = "msd" if layout == "msd" else layout
    converted = np.zeros_like(labels)
    for src, dst in _FROM_2021[conv].items():
        converted[labels == src] = dst
    if layout == "msd":
        stack = np.stack([images[m] for m in ("flair", "t1", "t1ce", "t2")], axis=-1)
        nib.save(nib.Nifti1Image(stack, affine), str(folder / "BRATS_001.nii.gz"))
        if labelled:
            nib.save(nib.Nifti1Image(converted, affine), str(folder / "label.nii.gz"))
        return folder
    names, seg_name = LAYOUTS[layout]
    for m, stem in names.items():
        nib.save(nib.Nifti1Image(images[m], affine), str(folder / f"{stem}.nii.gz"))
    if labelled:
        nib.save(nib.Nifti1Image(converted.astype(np.float32), affine),
                 str(folder / f"{seg_name}.nii.gz"))
    return folder
