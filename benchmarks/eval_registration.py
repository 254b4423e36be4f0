"""How close does the study path's registration land to a known motion? For every shared BraTS
case, the simulated clinical study of ``eval_study_path.py`` (same seeds: every sequence on its
own oblique grid with a bias field, the FLAIR moved 3 degrees about z and (4, -3, 2) mm) is
imported and bias-corrected as :func:`mrimaster.imaging.prepare.prepare_study` does, and the
pair the stage registers (the FLAIR onto the T1-Gd, or the T1 onto the FLAIR in studies without
T1-Gd) is registered with each setting given. Error: the mean and largest distance, over the
reference's foreground voxels, between where the found transform and the known motion put a
point (mm); whether the optimiser converged, and in how many iterations at its finest level.

    MRIMASTER_DATA_ROOT=../shared/datasets python benchmarks/eval_registration.py \\
        --setting '{"sampling": 0.1, "iterations": 300}' --setting '{}'

``{}`` is :func:`mrimaster.imaging.register.register`'s defaults; other keys are its keyword
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from eval_study_path import moved  # same folder: run as `python benchmarks/...`

from mrimaster.imaging.bias import correct_bias
from mrimaster.imaging.dicom_import import import_study
from mrimaster.imaging.register import register
from mrimaster.imaging.registration_quality import foreground
from mrimaster.imaging.simulate import build_study
from mrimaster.segmentation.cases import find_cases
from mrimaster.segmentation.volumes import load_nifti

MOTION_DEG, MOTION_MM = 3.0, (4.0, -3.0, 2.0)
LPS = np.array([-1.0, -1.0, 1.0])


def motion(flair: nib.Nifti1Image) -> np.ndarray:
    """The RAS ``(4, 4)`` map from the FLAIR's original world to its moved one."""
    return np.asarray(moved(flair, MOTION_DEG, MOTION_MM).affine @ np.linalg.inv(flair.affine))


def errors(found: sitk.Transform, truth: np.ndarray, reference: nib.Nifti1Image
           ) -> tuple[float, float]:
    """Mean and largest distance (mm) between ``found`` (ITK, LPS, reference -> moving) and
    ``truth`` (RAS ``(4, 4)``, reference -> moving) over every 50th foreground voxel."""
    voxels = np.argwhere(foreground(np.asarray(reference.dataobj, np.float32)))[::50]
    points = nib.affines.apply_affine(reference.affine, voxels)
    expected = nib.affines.apply_affine(truth, points)
    got = np.array([np.asarray(found.TransformPoint(tuple(map(float, p * LPS)))) * LPS
                    for p in points])
    dist = np.linalg.norm(got - expected, axis=1)
    return float(dist.mean()), float(dist.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", action="append", default=[],
                        help="register() keyword arguments as JSON (repeatable; default {})")
    args = parser.parse_args()
    settings = [json.loads(s) for s in args.setting or ["{}"]]
    root = Path(os.environ.get("MRIMASTER_DATA_ROOT", "../shared/datasets")) / "brats-mini"
    results: list[list[float]] = [[] for _ in settings]
    print(f"{'case':<24} {'setting':<40} {'mean mm':>8} {'max mm':>7} {'iter':>5} conv")
    with tempfile.TemporaryDirectory() as tmp:
        for k, case in enumerate(find_cases(root)):
            flair = load_nifti(case.images["flair"])
            volumes: dict[str, nib.Nifti1Image | Path] = {
                "flair": moved(flair, MOTION_DEG, MOTION_MM)}
            volumes.update({r: p for r, p in case.images.items() if r != "flair"})
            study = Path(tmp) / case.name
            build_study(volumes, study / "dicom", seed=k)
            records = import_study(study / "dicom", study / "nifti")
            by_role = {r.role: study / "nifti" / r.nifti for r in records if r.role and r.nifti}
            images = {role: correct_bias(load_nifti(p))[0] for role, p in by_role.items()}
            to_moved = motion(flair)
            if "t1ce" in images:  # the FLAIR onto the T1-Gd: T1-Gd points -> moved FLAIR's
                reference, moving, truth = images["t1ce"], images["flair"], to_moved
            else:  # the T1 onto the moved FLAIR: FLAIR points -> the T1's (unmoved) world
                reference, moving, truth = images["flair"], images["t1"], np.linalg.inv(
                    to_moved)
            for n, setting in enumerate(settings):
                result = register(reference, moving, case.name, check=False, **setting)
                mean_mm, max_mm = errors(result.transform, truth, reference)
                q = result.quality
                results[n].append(mean_mm)
                print(f"{case.name:<24} {json.dumps(setting):<40} {mean_mm:8.2f} {max_mm:7.2f} "
                      f"{q.iterations:5d} {'yes' if q.converged else 'NO'}", flush=True)
    for setting, errs in zip(settings, results, strict=True):
        print(f"{json.dumps(setting):<40} mean error {statistics.mean(errs):.2f} mm, worst case "
              f"{max(errs):.2f} mm over {len(errs)} studies")


if __name__ == "__main__":
    main()
