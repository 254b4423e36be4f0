"""The sequence checks' figures on the real brats-mini cases and on broken copies of them.

For each case, the FLAIR is the reference and its other sequence (T1-Gd for the BraTS 2015
cases, T1 for the BraTS 2018 ones) is checked as it is, shifted by 20 mm in its header,
flipped left-right in its voxels, and replaced by the next case's sequence of the same kind
(another patient; BraTS volumes share one atlas space). Prints the head-mask Dice, the NMI,
the best mirror image's NMI, the grid and head verdicts, and whether each verdict is right.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/sequence_checks.py [--study]

``--study``: the same through ``seg predict``'s path (:func:`segment_study`: registration onto
the reference, then the checks of :func:`from_registration`), slower (a registration and a
segmentation per run).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from mrimaster.segmentation.cases import find_cases
from mrimaster.segmentation.geometry import same_grid
from mrimaster.segmentation.sequence_checks import head_figures, head_problem
from mrimaster.segmentation.volumes import load_nifti


def shifted(img: nib.Nifti1Image, mm: float = 20.0) -> nib.Nifti1Image:
    affine = np.array(img.affine, np.float64)
    affine[1, 3] += mm
    return nib.Nifti1Image(np.asarray(img.dataobj, np.float32), affine)


def flipped(img: nib.Nifti1Image) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.ascontiguousarray(np.asarray(img.dataobj, np.float32)[::-1]),
                           img.affine)


def study_path(cases: list, out: Path) -> int:
    """``seg predict``'s path (registration) on each case as it is, and on three BraTS 2018
    cases with their T1 shifted 20 mm, flipped, or another case's; pat0001 with its FLAIR
    shifted 20 mm, pat0002 with its FLAIR flipped. Prints each sequence's grid, head and
    problem."""
    from mrimaster.errors import MRIMasterError
    from mrimaster.segmentation.loading import load_segmenter_for_inference
    from mrimaster.segmentation.study import segment_study
    from mrimaster.settings import load_settings

    seg = load_segmenter_for_inference("default", load_settings().models_dir, "auto")
    by_name = {c.name: c for c in cases}
    runs: list[tuple[str, str, dict[str, Path], bool]] = []
    for case in cases:
        runs.append((case.name, "own", dict(case.images), False))
    for name, foreign in (("case_0", "case_1"), ("case_3", "case_4"), ("case_6", "case_7")):
        case = by_name[name]
        t1 = load_nifti(case.images["t1"])
        for variant, img in (("shift20", shifted(t1)), ("flipLR", flipped(t1)),
                             ("foreign", load_nifti(by_name[foreign].images["t1"]))):
            path = out / f"{name}-{variant}-t1.nii.gz"
            nib.save(img, str(path))
            runs.append((name, f"t1 {variant}", {**case.images, "t1": path}, True))
    pat = by_name["brats_2013_pat0001_1"]
    path = out / "pat0001-shift20-flair.nii.gz"
    nib.save(shifted(load_nifti(pat.images["flair"])), str(path))
    runs.append((pat.name, "flair shift20", {**pat.images, "flair": path}, True))
    pat2 = by_name["brats_2013_pat0002_1"]  # flipped, it passes the registration's NMI rule
    path = out / "pat0002-flipLR-flair.nii.gz"
    nib.save(flipped(load_nifti(pat2.images["flair"])), str(path))
    runs.append((pat2.name, "flair flipLR", {**pat2.images, "flair": path}, True))
    wrong = 0
    for name, variant, images, bad in runs:
        start = time.perf_counter()
        try:
            study = segment_study(seg, images, out / f"{name}-{variant.replace(' ', '-')}")
            problems = json.loads(
                (study.result.seg_path.parent / "volumes.json").read_text())
            found = problems["sequence_problems"]
            entries = problems["sequences"]
            line = "; ".join(f"{m}: {e['grid']} / {e['head']}" for m, e in entries.items()
                             if e["grid"] != "reference")
        except MRIMasterError as exc:
            found, line = [f"refused: {exc.message}"], ""
        flagged = bool(found)
        wrong += flagged != bad
        print(f"{name:22s} {variant:14s} {time.perf_counter() - start:5.0f} s "
              f"{'FLAGGED' if flagged else 'clean  '}{'' if flagged == bad else ' WRONG'} "
              f"{line} {found}", flush=True)
    print(f"{wrong} wrong verdicts of {len(runs)}")
    return 1 if wrong else 0


def main() -> int:
    root = Path(os.environ.get("MRIMASTER_DATA_ROOT", "")) / "brats-mini"
    cases = find_cases(root)
    if "--study" in sys.argv:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            return study_path(cases, Path(tmp))
    other = [next(m for m in c.available() if m != "flair") for c in cases]
    wrong = 0
    start = time.perf_counter()
    print(f"{'case':22s} {'variant':8s} {'dice':>6s} {'nmi':>6s} {'mirror':>6s} {'ratio':>5s} "
          "grid  head")
    for i, case in enumerate(cases):
        ref = load_nifti(case.images["flair"])
        own = load_nifti(case.images[other[i]])
        j = (i + 1) % len(cases)
        foreign = load_nifti(cases[j].images[other[j]])
        for variant, img, bad in (("own", own, False), ("shift20", shifted(own), True),
                                  ("flipLR", flipped(own), True),
                                  ("foreign", foreign, True)):
            fig = head_figures(ref, img)
            grid_ok = same_grid(img, ref)
            head_ok = head_problem(fig, "flair") is None
            flagged = not (grid_ok and head_ok)
            wrong += flagged != bad
            print(f"{case.name:22s} {variant:8s} {fig['head_dice']:6.3f} {fig['nmi']:6.3f} "
                  f"{fig['nmi_mirrored']:6.3f} "
                  f"{(fig['nmi_mirrored'] - 1) / max(fig['nmi'] - 1, 1e-9):5.2f} "
                  f"{'same' if grid_ok else 'DIFF'}  "
                  f"{'same' if head_ok else 'DIFF'}{'' if flagged == bad else '  WRONG'}",
                  flush=True)
    print(f"{wrong} wrong verdicts of {4 * len(cases)}; {time.perf_counter() - start:.0f} s")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
