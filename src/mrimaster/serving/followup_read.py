"""The later study of a follow-up pair read again on the earlier study's intensity scale
(:mod:`mrimaster.segmentation.longitudinal`), for the change between the two.

Each study's own read z-scores it over its whole brain, tumour included, so a growing tumour
shifts its own scale and the change between two own reads falls short of the growth. This
read uses what the two studies' segmentations stored (``registered/<role>.nii.gz``: every
sequence as the network saw it, on the study's reference grid; ``mask.nii.gz``), finds each
study's normal-appearing brain on its own grid (only label maps, brains and tumour masks, cross
between the grids, nearest-neighbour through the follow-up registration or its inverse), and
segments both studies again from those files: the earlier one on its own scale, the later one
on the matched scale. Both reads go through the same path (the stored files, their grid), so
their difference is the change; a sequence only the later study has keeps its own scale. The
case pages keep each study's own read: these two only serve the change.
"""

from __future__ import annotations

import logging
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from mrimaster.errors import ModelError, MRIMasterError
from mrimaster.serving.context import AppContext
from mrimaster.serving.studies import registered_files
from mrimaster.storage.tables import Case

log = logging.getLogger(__name__)

def matched_read(ctx: AppContext, earlier: Case, later: Case, transform: sitk.Transform
                 ) -> dict[str, Any]:
    """``later`` segmented on ``earlier``'s intensity scale.

    Args:
        ctx: The app (its store and segmentation model).
        earlier, later: Two segmented 3D studies of one patient.
        transform: The follow-up registration: earlier (fixed) physical points to later
            (moving) ones.

    Returns:
        ``{"volumes_ml": {WT, TC, ET}, "earlier_ml": {WT, TC, ET}, "status", "scale"}`` (the
        later read, the earlier one's read through the same path, the later read's trust
        status and, per sequence, the mean and deviation it was z-scored with), or
        ``{"error": why, "retry": bool}`` when it cannot be read so (a study segmented before
        its sequences were stored, files on different grids, no shared sequence, too little
        normal-appearing brain; ``retry``: a failure that may pass, such as a server without
        models, which is not cached).
    """
    from mrimaster.imaging.register import resample_labels
    from mrimaster.segmentation.cases import Case as SegCase
    from mrimaster.segmentation.geometry import same_grid
    from mrimaster.segmentation.infer import segment_case
    from mrimaster.segmentation.longitudinal import matched_scale, normal_brain, own_scale
    from mrimaster.segmentation.volumes import brain_of, load_nifti

    mine, theirs = registered_files(later), registered_files(earlier)
    if not mine or not theirs:
        return {"error": "a study was segmented before its sequences were kept: segment it "
                         "again to read the change on one intensity scale", "retry": False}
    try:
        inverse = transform.GetInverse()
        with ctx.store.work_dir() as work:
            def fetch(digest: str, name: str) -> nib.Nifti1Image:
                path = work / name
                path.write_bytes(ctx.store.read(digest))
                return load_nifti(path)

            images = {r: fetch(d, f"later_{r}.nii.gz") for r, d in mine.items()}
            own = {r: fetch(d, f"earlier_{r}.nii.gz") for r, d in theirs.items()}
            later_grid, earlier_grid = next(iter(images.values())), next(iter(own.values()))
            later_arrays = {r: np.asarray(i.dataobj, np.float32) for r, i in images.items()}
            earlier_arrays = {r: np.asarray(i.dataobj, np.float32) for r, i in own.items()}
            later_mask = fetch(later.files["mask.nii.gz"], "later_mask.nii.gz")
            earlier_mask = fetch(earlier.files["mask.nii.gz"], "earlier_mask.nii.gz")
            for study, found in ((later, [*images.values(), later_mask]),
                                 (earlier, [*own.values(), earlier_mask])):
                if not all(same_grid(i, found[0]) for i in found):
                    return {"error": f"case {study.id}'s stored sequences and mask are not on "
                                     "one grid: segment it again", "retry": False}

            def label(data: np.ndarray, like: nib.Nifti1Image) -> nib.Nifti1Image:
                return nib.Nifti1Image(data.astype(np.uint8), like.affine)

            def onto(labels: nib.Nifti1Image, grid: nib.Nifti1Image, how: sitk.Transform
                     ) -> np.ndarray:  # nearest neighbour: only label maps cross the grids
                return np.asarray(resample_labels(labels, grid, how).dataobj) > 0

            later_brain = label(brain_of(later_arrays.values()), later_grid)
            earlier_brain = label(brain_of(earlier_arrays.values()), earlier_grid)
            later_tumour = np.asarray(later_mask.dataobj) > 0
            earlier_tumour = np.asarray(earlier_mask.dataobj) > 0
            later_normal = normal_brain(
                later_arrays, onto(earlier_brain, later_grid, inverse),
                later_tumour | onto(earlier_mask, later_grid, inverse))
            earlier_normal = normal_brain(
                earlier_arrays, onto(later_brain, earlier_grid, transform),
                earlier_tumour | onto(later_mask, earlier_grid, transform))
            earlier_scale = own_scale(earlier_arrays)
            scale = matched_scale(later_arrays, later_normal, earlier_arrays, earlier_normal,
                                  earlier_scale)
            if scale is None:
                return {"error": "the two studies share too little normal-appearing brain to "
                                 "put them on one intensity scale", "retry": False}
            cases = {name: SegCase(name=f"case-{study.id}-{name}",
                                   images={r: work / f"{name}_{r}.nii.gz" for r in roles})
                     for name, study, roles in (("earlier", earlier, theirs),
                                                ("later", later, mine))}
            with ctx.seg_lock:
                seg = ctx.models_or_fail().segmenter().model
                before = segment_case(seg, cases["earlier"], work / "earlier_read",
                                      scale=earlier_scale)
                after = segment_case(seg, cases["later"], work / "later_read", scale=scale)
    except MRIMasterError as exc:
        log.warning("follow-up read of case %d on case %d's scale failed: %s", later.id,
                    earlier.id, exc)
        return {"error": f"the later study could not be read on the earlier one's scale: "
                         f"{exc}", "retry": isinstance(exc, ModelError)}
    except Exception:  # the read is optional: the follow-up must still answer
        log.exception("follow-up read of case %d on case %d's scale failed", later.id,
                      earlier.id)
        return {"error": "the later study could not be read on the earlier one's scale "
                         "(an internal error, logged)", "retry": True}

    def rounded(volumes: dict[str, float | None]) -> dict[str, float | None]:
        return {k: None if v is None else round(float(v), 3) for k, v in volumes.items()}

    return {"volumes_ml": rounded(after.volumes_ml), "earlier_ml": rounded(before.volumes_ml),
            "status": after.status,
            "scale": {r: [round(m, 5), round(s, 5)] for r, (m, s) in scale.items()}}
