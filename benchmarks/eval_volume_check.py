"""The 3D brain-MRI check (:mod:`mrimaster.trust.volume_check`) on brain MRI volumes, which it must
let through, and on volumes that are not brain MRI, which it must refuse.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/eval_volume_check.py

Brain MRI: every sequence of every ``brats-mini`` case as stored (skull-stripped, 1 mm); the
same FLAIR and T1-Gd (or FLAIR and T1) as a simulated clinical study writes them (each on its
own oblique grid, 4-6 mm slices for the 2D sequences, with a bias field:
:func:`mrimaster.imaging.simulate.build_study`); the pydeface mean head (an unstripped head).
The 2D check trained on slices of 4 of every 7 brats-mini cases (``train`` below), calibrated
its threshold on 1 of 7 (``calib``); the rest (``report``) and the simulated and unstripped
volumes are new to it.

Not brain MRI: the GE QA phantom of ``dicom-scanners`` (a real 3D T1 scan of a phantom, read by
the project's DICOM import) and the kinds of :mod:`mrimaster.data.non_mri_volumes`, 3 seeds
each.

Prints, per volume, the slices rejected of those scored and the decision, then a summary.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nibabel as nib

from mrimaster.data import non_mri_volumes
from mrimaster.imaging.inputs import gather, load3d
from mrimaster.imaging.simulate import build_study
from mrimaster.segmentation.cases import find_cases
from mrimaster.segmentation.volumes import load_nifti
from mrimaster.settings import SHIPPED_MODELS
from mrimaster.training.brain_check_data import brats_parts
from mrimaster.trust.brain_check import load_brain_check
from mrimaster.trust.volume_check import VolumeVerdict, check_nifti, check_volume


def pydeface_head() -> Path | None:
    try:
        import pydeface
    except ImportError:
        return None
    path = Path(pydeface.__file__).parent / "data" / "mean_reg2mean.nii.gz"
    return path if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("MRIMASTER_DATA_ROOT", "../shared/datasets")))
    parser.add_argument("--models", type=Path, default=SHIPPED_MODELS)
    args = parser.parse_args()
    check = load_brain_check(args.models)
    brain: list[tuple[str, VolumeVerdict]] = []
    other: list[tuple[str, VolumeVerdict]] = []

    def show(group: list[tuple[str, VolumeVerdict]], name: str, v: VolumeVerdict) -> None:
        group.append((name, v))
        print(f"{name:<58} {v.rejected:>3}/{v.slices:<3} p50 {v.median_p:.2f}  "
              f"{'REFUSED' if v.refused else 'passed'}", flush=True)

    print("brain MRI (must pass)")
    parts = brats_parts(args.data_root / "brats-mini")
    part_of = {name.split("/")[0]: part for part, cases in parts.items() for name, _ in cases}
    for part, cases in parts.items():
        for name, path in cases:
            show(brain, f"{part:<6} {name}", check_nifti(check, load_nifti(path)))
    with tempfile.TemporaryDirectory() as tmp:
        for k, case in enumerate(find_cases(args.data_root / "brats-mini")):
            roles = ("flair", "t1ce") if "t1ce" in case.images else ("flair", "t1")
            given: dict[str, nib.Nifti1Image | Path] = {
                m: case.images[m] for m in roles if m in case.images}
            if "flair" not in given:
                continue
            study = build_study(given, Path(tmp) / case.name, distractors=False, seed=k)
            for role, img in study.items():
                zooms = ",".join(f"{z:.1f}" for z in img.header.get_zooms()[:3])
                show(brain, f"{part_of.get(case.name, '?'):<6} {case.name}/{role} study "
                            f"({zooms} mm)", check_nifti(check, img))
        head = pydeface_head()
        if head is not None:
            show(brain, "new    pydeface mean head (unstripped)",
                 check_nifti(check, load_nifti(head)))

        print("\nnot brain MRI (must be refused)")
        phantom = args.data_root / "dicom-scanners" / "ge-3d-t1-phantom"
        if phantom.is_dir():
            series, _ = gather(phantom, Path(tmp) / "phantom", {})
            for role, seq in series.items():
                show(other, f"GE QA phantom, 3D T1 ({role})", check_nifti(check, load3d(seq)))
        for kind in non_mri_volumes.KINDS:
            for seed in (0, 1, 2):
                volume, spacing = non_mri_volumes.generate(kind, seed)
                show(other, f"{kind} seed {seed}", check_volume(check, volume, spacing))

    passed = sum(not v.refused for _, v in brain)
    refused = sum(v.refused for _, v in other)
    worst = max(brain, key=lambda r: r[1].rejected / max(r[1].slices, 1))
    print(f"\nbrain MRI volumes passed: {passed}/{len(brain)}; most slices rejected in one: "
          f"{worst[1].rejected}/{worst[1].slices} ({worst[0].strip()})")
    print(f"non-brain volumes refused: {refused}/{len(other)}")


if __name__ == "__main__":
    main()
