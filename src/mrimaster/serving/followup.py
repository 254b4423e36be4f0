"""Follow-up of a patient: the 3D studies of one pseudonym in time order, the tumour volumes of
each with their change, and each later study registered onto the one before it (for the
side-by-side viewer at the same position).

Volumes come from each study's own segmentation on its own grid (a rigid registration does not
change a volume); the registration only serves the side-by-side view: the later study's image
(linear) and mask (nearest-neighbour, :func:`mrimaster.imaging.register.resample_labels`) are
resampled onto the earlier study's reference grid. Those files, and the registration's quality
figure, are cached in the store under the later case's files
(``followup/<earlier id>/image.nii.gz``, ``.../mask.nii.gz``, ``followup/<earlier id>.json``),
keyed by the digests of the four inputs: a study segmented again is registered again, else the
page never registers twice.

The change from the previous study is also given with the later study read on the earlier
one's intensity scale (``from_previous_matched``: the later read minus the earlier study's read
through the same path; :mod:`mrimaster.serving.followup_read`), computed with the pair's
registration and cached with it: each study's own read z-scores it over its own brain, tumour
included, so a growing tumour shifts its own scale and the change between two own reads falls
short of the growth. It is not given when the registration is not trusted.

A volume change is not a RANO assessment (:data:`RANO_NOTE`)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from mrimaster.errors import MRIMasterError
from mrimaster.serving.cases import UploadError
from mrimaster.serving.context import AppContext
from mrimaster.serving.followup_read import matched_read
from mrimaster.serving.masks import reviewed
from mrimaster.serving.studies import REGISTERED, registered_files
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Case

log = logging.getLogger(__name__)

REGIONS = ("WT", "TC", "ET")
REGION_NAMES = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}
RANO_NOTE = ("A volume change is not a RANO assessment: RANO (Response Assessment in "
             "Neuro-Oncology) uses bidimensional products of the enhancing lesions and clinical "
             "criteria (new lesions, non-enhancing disease, corticosteroid dose, clinical "
             "status).")
MAX_STUDIES = 200
"""Most 3D studies of one patient shown on the page."""
SEGMENTED = ("ai-read", "referred", "reviewed")


def study_date(case: Case) -> tuple[str, str]:
    """``(ISO date, source)`` of a case: the (de-identified, patient-shifted) DICOM study date
    when the upload recorded one (``result["study_date"]`` or ``result["study"]
    ["study_date"]``, ``YYYYMMDD`` or ISO), else the upload time (UTC)."""
    result = case.result or {}
    study = result.get("study") if isinstance(result.get("study"), dict) else {}
    for raw in (result.get("study_date"), (study or {}).get("study_date")):
        text = str(raw or "").strip()
        if len(text) >= 8:
            digits = text.replace("-", "")[:8]
            if digits.isdigit():
                return f"{digits[:4]}-{digits[4:6]}-{digits[6:8]}", "study date"
    return repo.aware(case.created_at).strftime("%Y-%m-%d %H:%M"), "upload time"


def patient_cases(db: Session, pseudonym: str) -> list[Case]:
    """The 3D cases of ``pseudonym`` (exact match), oldest study first: by study date when
    every one has a (shifted) DICOM study date, else by upload time (a shifted date and an
    upload time are not comparable); then id."""
    rows, _ = repo.list_cases(db, repo.CaseFilter(pseudonym, "", "3d", 1, MAX_STUDIES))
    mine = [c for c in rows if c.pseudonym == pseudonym]
    if all(study_date(c)[1] == "study date" for c in mine):
        return sorted(mine, key=lambda c: (study_date(c)[0], repo.aware(c.created_at), c.id))
    return sorted(mine, key=lambda c: (repo.aware(c.created_at), c.id))


def _volumes(db: Session, case: Case) -> tuple[dict[str, float | None], str]:
    """A study's volumes (mL per region) and where they come from: the mask version a doctor
    marked reviewed when there is one (its volumes are the case's), else the AI's read."""
    mask = reviewed(db, case)
    found = (case.result or {}).get("volumes_ml") or {}
    source = "AI segmentation"
    if mask is not None and mask.get("kind") == "mask" and mask.get("volumes_ml"):
        found = mask["volumes_ml"]
        source = f"reviewed mask (version {mask['number']} by {mask['author']})"
    return {r: None if found.get(r) is None else float(found[r]) for r in REGIONS}, source


def change(now: float | None, then: float | None) -> dict[str, float | None]:
    """``{"ml": now - then, "percent": 100 (now - then) / then}``; ``None`` where a volume is
    missing (percent also when ``then`` is 0)."""
    if now is None or then is None:
        return {"ml": None, "percent": None}
    diff = now - then
    return {"ml": round(diff, 3), "percent": round(100 * diff / then, 2) if then > 0 else None}


def _segmented(case: Case) -> bool:
    return (case.status in SEGMENTED and isinstance(case.files.get("mask.nii.gz"), str)
            and bool((case.result or {}).get("volumes_ml")))


def reference_role(case: Case) -> str:
    """The role whose grid the case's mask lies on (the segmentation's reference sequence)."""
    study = (case.result or {}).get("study") or {}
    role = (study.get("reference") or {}).get("role") if isinstance(study, dict) else None
    if isinstance(role, str) and f"{role}.nii.gz" in case.files:
        return role
    return "flair"


def _image_file(case: Case, role: str) -> str:
    """The case's image of ``role`` on its mask's grid: the sequence as its segmentation saw
    it (``registered/<role>.nii.gz``, in the reference's frame, stripped when it was) when
    stored, else the uploaded series (the reference's own grid for the reference role)."""
    return f"{REGISTERED}{role}.nii.gz" if role in registered_files(case) else f"{role}.nii.gz"


def _inputs(earlier: Case, later: Case) -> dict[str, str]:
    """The four stored files a pair's registration depends on (by digest): the earlier
    study's reference image and mask, the later study's image of the same role (else its
    reference) and its mask. Both images are the sequences as the segmentations saw them when
    stored (:func:`_image_file`): a later sequence other than its study's reference is then
    in the reference's frame, as its mask is, and both are stripped alike."""
    role = reference_role(earlier)
    moving = role if f"{role}.nii.gz" in later.files else reference_role(later)
    fixed_file, moving_file = _image_file(earlier, role), _image_file(later, moving)
    return {"role": role, "moving_role": moving,
            "earlier_file": fixed_file, "later_file": moving_file,
            "earlier_image": earlier.files[fixed_file],
            "earlier_mask": earlier.files["mask.nii.gz"],
            "later_image": later.files[moving_file],
            "later_mask": later.files["mask.nii.gz"]}


def _cached(ctx: AppContext, later: Case, key: str, inputs: dict[str, str]
            ) -> dict[str, Any] | None:
    digest = later.files.get(f"{key}.json")
    names = (f"{key}/image.nii.gz", f"{key}/mask.nii.gz")
    if not isinstance(digest, str) or not ctx.store.exists(digest):
        return None
    if not all(isinstance(later.files.get(n), str) and ctx.store.exists(later.files[n])
               for n in names):
        return None
    info: dict[str, Any] = json.loads(ctx.store.read(digest))
    matched = info.get("matched")
    if info.get("inputs") != inputs or not isinstance(matched, dict) or matched.get("retry"):
        return None  # changed, from an older version, or a read that may work now
    return info


def register_pair(ctx: AppContext, earlier: Case, later: Case) -> dict[str, Any]:
    """Register ``later``'s image onto ``earlier``'s reference image (rigid, Mattes MI; the
    two sessions do not share the scanner's coordinates, so no limit on the translation or
    rotation, but convergence, overlap and NMI are checked), resample the later image
    (linear) and mask (nearest-neighbour) onto the earlier reference grid, and store them.

    Returns:
        ``{"inputs", "quality", "problems", "init"}`` (also stored as
        ``followup/<earlier id>.json`` in ``later.files``, the caller commits).
    """
    import nibabel as nib

    from mrimaster.imaging.register import register, resample_labels
    from mrimaster.segmentation.volumes import load_nifti

    key = f"followup/{earlier.id}"
    inputs = _inputs(earlier, later)
    with ctx.store.work_dir() as work:
        paths = {}
        for name in ("earlier_image", "later_image", "later_mask"):
            paths[name] = work / f"{name}.nii.gz"
            paths[name].write_bytes(ctx.store.read(inputs[name]))
        fixed, moving = load_nifti(paths["earlier_image"]), load_nifti(paths["later_image"])
        best = None
        for init in ("geometry", "moments"):
            try:
                reg = register(fixed, moving, f"case {later.id} {inputs['moving_role']}",
                               init=init, max_translation_mm=None, max_rotation_deg=None,
                               check=False)
            except MRIMasterError as exc:
                log.warning("follow-up registration (%s) failed: %s", init, exc)
                continue
            if best is None or reg.quality.nmi > best[1].quality.nmi:
                best = (init, reg)
            if not reg.quality.problems(max_translation_mm=None, max_rotation_deg=None):
                break
        if best is None:
            raise UploadError(f"case {later.id} could not be registered onto case "
                              f"{earlier.id}", "check that both studies show the same head",
                              422)
        init, reg = best
        mask = resample_labels(load_nifti(paths["later_mask"]), fixed, reg.transform)
        nib.save(reg.resampled, str(work / "image.nii.gz"))
        nib.save(mask, str(work / "mask.nii.gz"))
        files = {f"{key}/image.nii.gz": ctx.store.put_file(work / "image.nii.gz"),
                 f"{key}/mask.nii.gz": ctx.store.put_file(work / "mask.nii.gz")}
    quality = {k: (round(v, 4) if isinstance(v, float) else v)
               for k, v in vars(reg.quality).items()}
    problems = reg.quality.problems(max_translation_mm=None, max_rotation_deg=None)
    info = {"inputs": inputs, "quality": quality, "init": init, "problems": problems,
            "matched": {"error": "the registration is not trusted", "retry": False}
            if problems else matched_read(ctx, earlier, later, reg.transform)}
    files[f"{key}.json"] = ctx.store.put_bytes(json.dumps(info, indent=1).encode())
    later.files = {**later.files, **files}
    return info


def _pair(ctx: AppContext, earlier: Case, later: Case, register: bool = True
          ) -> dict[str, Any]:
    key = f"followup/{earlier.id}"
    out: dict[str, Any] = {"earlier": earlier.id, "later": later.id, "pending": False}
    try:
        info = _cached(ctx, later, key, _inputs(earlier, later))
        if info is None and not register:
            return {**out, "pending": True, "error": None, "files": None}
        info = info or register_pair(ctx, earlier, later)
    except MRIMasterError as exc:
        return {**out, "error": str(exc), "files": None}
    role = info["inputs"]["role"]
    files = {"earlier_image": f"/api/cases/{earlier.id}/files/{info['inputs']['earlier_file']}",
             "earlier_mask": f"/api/cases/{earlier.id}/files/mask.nii.gz",
             "later_image": f"/api/cases/{later.id}/files/{key}/image.nii.gz",
             "later_mask": f"/api/cases/{later.id}/files/{key}/mask.nii.gz"}
    return {**out, "error": None, "role": role, "moving_role": info["inputs"]["moving_role"],
            "quality": info["quality"], "problems": info["problems"], "files": files,
            "matched": info["matched"]}


def follow_up(ctx: AppContext, db: Session, pseudonym: str, register: bool = True
              ) -> dict[str, Any]:
    """A patient's follow-up: every 3D study in time order with its volumes and their change
    from the first and from the previous segmented study, and each consecutive pair of
    segmented studies registered (cached; the caller commits the new cache entries).
    With ``register=False`` (the HTML page, which must answer at once: a registration takes
    tens of seconds on a CPU) a pair not registered yet is only marked ``"pending": True``;
    the page's script then asks the API, which registers it.

    Returns:
        ``{"pseudonym", "studies": [{"case", "date", "date_source", "status", "segmented",
        "volumes_ml": {WT, TC, ET}, "volumes_source" (the reviewed mask version's volumes when
        a doctor marked one, else the AI's), "from_first": {region: {"ml", "percent"}},
        "from_previous": ..., "from_previous_matched": ...}], "pairs": [{"earlier",
        "later", "pending", "files", "quality", "problems", "error", "matched"}], "regions",
        "note"}`` (volumes in mL; ``matched``: :func:`mrimaster.serving.followup_read.
        matched_read`'s result).

    Raises:
        UploadError: the patient has no 3D study (404).
    """
    found = patient_cases(db, pseudonym)
    if not found:
        raise UploadError(f"there is no 3D study of patient {pseudonym}",
                          "open the patient from the worklist", 404)
    studies: list[dict[str, Any]] = []
    first: Case | None = None
    previous: Case | None = None
    pairs = []
    volumes = {case.id: _volumes(db, case) for case in found}
    for case in found:
        date, source = study_date(case)
        entry: dict[str, Any] = {"case": case.id, "date": date, "date_source": source,
                                 "status": case.status, "segmented": _segmented(case),
                                 "volumes_ml": volumes[case.id][0],
                                 "volumes_source": volumes[case.id][1], "from_first": None,
                                 "from_previous": None, "from_previous_matched": None}
        if entry["segmented"]:
            now = entry["volumes_ml"]
            if first is not None and previous is not None:
                entry["from_first"] = {r: change(now[r], volumes[first.id][0][r])
                                       for r in REGIONS}
                entry["from_previous"] = {r: change(now[r], volumes[previous.id][0][r])
                                          for r in REGIONS}
                pairs.append(_pair(ctx, previous, case, register))
                matched = pairs[-1].get("matched") or {}
                if matched.get("volumes_ml") and matched.get("earlier_ml"):
                    entry["from_previous_matched"] = {
                        r: change(matched["volumes_ml"].get(r), matched["earlier_ml"].get(r))
                        for r in REGIONS}
            first = first or case
            previous = case
        studies.append(entry)
    return {"pseudonym": pseudonym, "studies": studies, "pairs": pairs,
            "regions": REGION_NAMES, "note": RANO_NOTE,
            "generated_at": datetime.now().astimezone().isoformat(timespec="seconds")}
