"""Converting an uploaded DICOM zip into a 3D study's series (:func:`import_archive`): the
``series.json`` entries, the volumes kept and the role of each, with the text that
de-identification removes taken out of what the entries quote (:func:`_without_description`,
:func:`_without_header_text`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from mrimaster.serving.cases import UploadError
from mrimaster.serving.context import AppContext
from mrimaster.serving.studies import MODALITY_NAMES, series_label
from mrimaster.storage.deid import date_offset, patient_key, pseudonym, shift_date


def import_archive(ctx: AppContext, archive: Path, work: Path, confirm_burned_in: bool,
                    burned: list[str]) -> tuple[list[dict[str, Any]], dict[str, Path],
                                                dict[str, str], str]:
    """Convert a DICOM zip; returns ``(series.json entries, {case file: NIfTI}, {role: case
    file}, patient pseudonym)``. Every structural series converted to a volume is kept; a role
    found on several series goes to the one with the smallest voxels (as the imaging stage
    chooses).

    Raises:
        DataError: an unreadable or over-limit zip, no DICOM.
        UploadError: series of several patients or studies (422); a kept series declaring
            burned-in annotation, not confirmed (409).
    """
    import pydicom

    from mrimaster.imaging.dicom_import import import_study
    from mrimaster.imaging.inputs import check_one_study, smallest_voxels
    from mrimaster.storage.deid import burned_in_reason

    folder = work / "import"
    records = import_study(archive, folder, extract_to=work / "dicom")
    entries: list[dict[str, Any]] = []
    kept: dict[str, Path] = {}
    candidates: dict[str, list[str]] = {}
    identities: dict[str, tuple[str, str]] = {}
    sources: dict[str, list[Path]] = {}
    uploaded: dict[str, str] = {}
    for index, record in enumerate(records):
        entry = _without_description({**record.to_json(), "file": None})
        entry = _without_header_text(entry, record.sources)
        if record.nifti and record.kind == "structural":
            name = f"series/{index + 1}.nii.gz"  # not the converter's name: it quotes the
            entry["nifti"] = name.removeprefix("series/")  # series description
            entry["file"] = name
            kept[name] = folder / record.nifti
            identities[name] = record.identity
            uploaded[name] = series_label(record.to_json())  # only for the refusal below
            sources[name] = list(record.sources)
            if record.role in MODALITY_NAMES:
                candidates.setdefault(record.role, []).append(name)
        entries.append(entry)
    labels = {e["file"]: series_label(e) for e in entries if e["file"]}
    check_one_study({labels[name]: identity for name, identity in identities.items()})
    chosen = smallest_voxels({role: [kept[n] for n in names]
                              for role, names in candidates.items()})
    roles = {role: next(n for n in names if kept[n] == chosen[role])
             for role, names in candidates.items()}
    for entry in entries:
        used = [r for r, n in roles.items() if entry["file"] == n]
        if used:
            entry["used_as"] = used[0]
        elif entry["file"] and entry["role"] in roles:
            entry["not_used"] = (f"another {MODALITY_NAMES[entry['role']]} series has "
                                 "smaller voxels")
    reasons = {}
    for name, files in sources.items():
        for path in files:
            reason = burned_in_reason(pydicom.dcmread(path, stop_before_pixels=True))
            if reason:
                reasons[name] = reason
                break
    if reasons and not confirm_burned_in:
        # the refusal goes back to the uploader only: it names their series as they know them
        names = "; ".join(f"{uploaded[n]}: {why}" for n, why in reasons.items())
        raise UploadError(f"series with burned-in annotation ({names}): text in the pixels "
                          "is not removed by de-identification",
                          "check the series in your viewer: if no patient identifier is "
                          "burned in, upload again with 'confirm burned-in annotation' "
                          "(API: confirm_burned_in=true); else leave those series out", 409)
    burned += [f"{labels[n]}: {why}" for n, why in reasons.items()]
    alias = ""
    if sources:
        first = pydicom.dcmread(next(iter(sources.values()))[0], stop_before_pixels=True)
        patient = patient_key(first)
        alias = pseudonym(ctx.key, patient)
        # the study's date as de-identification shifts it (the patient's offset, the same
        # for all their studies): the follow-up orders a patient's studies by it
        raw = str(first.get("StudyDate", "") or first.get("SeriesDate", "") or "")
        shifted = shift_date(raw, timedelta(days=date_offset(ctx.key, patient))) if raw else None
        for entry in entries:
            if shifted and entry["file"]:
                entry["study_date"] = shifted
    return entries, kept, roles, alias


def _without_description(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``series.json`` entry without the series description, wherever it is quoted (its
    ``why`` and ``reason``): de-identification removes Series Description (PS3.15 Table
    E.1-1: X), since people type names into it; the app stores and shows what is left."""
    description = str(entry.get("description") or "")

    def clean(text: str) -> str:  # "series 'AX FLAIR' mixes ..." -> "the series mixes ..."
        for quoted in (f"series {description!r}", repr(description), description):
            text = text.replace(quoted, "the series")
        return text

    if description:
        entry["why"] = [clean(str(w)) for w in entry.get("why") or []]
        if entry.get("reason"):
            entry["reason"] = clean(str(entry["reason"]))
    entry["description"] = ""
    return entry


def _without_header_text(entry: dict[str, Any], sources: list[Path]) -> dict[str, Any]:
    """A ``series.json`` entry whose ``why`` and ``reason`` quote no value that
    de-identification removes or replaces in the series' first file
    (:func:`mrimaster.storage.deid.identifying_text`: the role decision quotes
    ContrastBolusAgent and ProtocolName, a refusal may quote the Series Instance UID) nor the
    name of one of its files or folders (a refusal quotes the file at fault; exports name
    files by SOP Instance UID, people by patient; a series without a UID is named by its
    folder); each is shown as ``(removed)``."""
    import re

    import pydicom

    from mrimaster.storage.deid import identifying_text

    if not sources:
        return entry
    header = pydicom.dcmread(sources[0], stop_before_pixels=True)
    files = {p.name for p in sources} | {str(p.parent) for p in sources}  # no UID: the folder
    values = sorted(identifying_text(header) | files, key=len, reverse=True)
    if not values:
        return entry
    quoted = re.compile("|".join(rf"(?<![\w.]){re.escape(v)}(?![\w.])" for v in values))
    entry["why"] = [quoted.sub("(removed)", str(w)) for w in entry.get("why") or []]
    if entry.get("reason"):
        entry["reason"] = quoted.sub("(removed)", str(entry["reason"]))
    return entry
