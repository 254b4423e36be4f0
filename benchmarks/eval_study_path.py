"""Does the real-study path keep the segmentation's quality? For every shared BraTS case: the
case given pre-aligned (BraTS' own grid) and the same case as a simulated clinical DICOM study
(every sequence on its own oblique grid and field of view with an intensity bias, the FLAIR
moved by patient motion, a localizer and a DWI beside them; :mod:`mrimaster.imaging.simulate`),
both through ``mrimaster seg predict``; whole-tumour Dice of each against the BraTS label (on
the label's grid; when the moved FLAIR is the reference, as in studies without T1-Gd, the
label is moved with it, since the mask is written in the reference's frame), and the
registration's figures.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/eval_study_path.py

The shipped model was trained on these cases: the absolute Dice flatters it; the difference
between the two columns is what this measures.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

from mrimaster.cli.main import main as cli
from mrimaster.imaging.simulate import build_study
from mrimaster.segmentation.cases import find_cases
from mrimaster.segmentation.labels import to_regions
from mrimaster.segmentation.metrics import dice
from mrimaster.segmentation.outputs import result_mask
from mrimaster.segmentation.study import onto_reference
from mrimaster.segmentation.volumes import load_nifti


def moved(img: nib.Nifti1Image, degrees: float, shift: tuple[float, float, float]
          ) -> nib.Nifti1Image:
    """The head rotated about z through the volume's centre and shifted (mm)."""
    a = np.radians(degrees)
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    centre = img.affine @ np.r_[(np.asarray(img.shape[:3]) - 1) / 2, 1]
    to, back = np.eye(4), np.eye(4)
    to[:3, 3], back[:3, 3] = -centre[:3], centre[:3] + np.asarray(shift)
    return nib.Nifti1Image(np.asarray(img.dataobj, np.float32), back @ rot @ to @ img.affine)


def wt_dice(seg: Path, truth: nib.Nifti1Image, convention: str) -> float:
    labels = np.asarray(onto_reference(load_nifti(seg), truth).dataobj) > 0
    return dice(labels, to_regions(np.asarray(truth.dataobj).round(), convention)[0][0])


def main() -> None:
    root = Path(os.environ.get("MRIMASTER_DATA_ROOT", "../shared/datasets")) / "brats-mini"
    rows = []
    print(f"{'case':<24} {'aligned':>8} {'study':>8} {'diff':>7}  registration (moved FLAIR)")
    with tempfile.TemporaryDirectory() as tmp:
        for k, case in enumerate(find_cases(root)):
            assert case.seg is not None and case.convention is not None
            truth = load_nifti(case.seg)
            out = Path(tmp) / case.name
            folder = case.images["flair"].parent
            assert cli(["seg", "predict", "--case", str(folder), "--out",
                        str(out / "aligned")]) == 0
            base = wt_dice(result_mask(out / "aligned")[0], truth, case.convention)
            volumes: dict[str, nib.Nifti1Image | Path] = {
                "flair": moved(load_nifti(case.images["flair"]), 3.0, (4.0, -3.0, 2.0))}
            volumes.update({r: p for r, p in case.images.items() if r != "flair"})
            build_study(volumes, out / "study", seed=k)
            assert cli(["seg", "predict", "--case", str(out / "study"), "--out",
                        str(out / "result")]) == 0
            if "t1ce" not in case.images:  # the moved FLAIR is the reference: the mask is in
                truth = moved(truth, 3.0, (4.0, -3.0, 2.0))  # its frame, and so is the label
            score = wt_dice(result_mask(out / "result")[0], truth, case.convention)
            info = json.loads((out / "result" / "volumes.json").read_text())["study"]
            flair = info["sequences"]["flair"]
            reg = ("reference" if flair.get("method") == "reference" else
                   f"NMI {flair['nmi']:.3f}, {flair.get('rotation_deg', 0):.1f} deg, "
                   f"{flair.get('translation_mm', 0):.1f} mm")
            rows.append((case.name, base, score))
            print(f"{case.name:<24} {base:8.3f} {score:8.3f} {score - base:+7.3f}  {reg}; "
                  f"{info['timings_s']['total']:.0f} s", flush=True)
    diffs = [s - b for _, b, s in rows]
    print(f"mean aligned {statistics.mean(b for _, b, _ in rows):.3f}, study "
          f"{statistics.mean(s for _, _, s in rows):.3f}; difference mean "
          f"{statistics.mean(diffs):+.3f}, "
          f"worst {min(diffs):+.3f}; within 0.05: {sum(abs(d) <= 0.05 for d in diffs)}/{len(rows)}")


if __name__ == "__main__":
    main()
