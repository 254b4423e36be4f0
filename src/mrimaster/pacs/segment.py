"""Segment a study on a PACS and file the results back into it.

:func:`segment_from_pacs`: retrieve the study (WADO-RS) into a temporary folder, run
:func:`mrimaster.segmentation.study.segment_study` into ``out_dir``, write the SEG and the
volume SR to ``out_dir/pacs/`` (:mod:`mrimaster.pacs.results`), then, unless ``dry_run``, send
both in one STOW-RS request (:func:`send_results`).

Retry: the two files are written once, so their SOP Instance UIDs never change; sending them
again (``mrimaster pacs send OUT_DIR``) stores the same instances, which a PACS treats as the
same objects (no duplicates). ``out_dir/pacs/sent.json`` records each send's outcome.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mrimaster.errors import DataError
from mrimaster.pacs.client import Pacs
from mrimaster.pacs.errors import PacsError
from mrimaster.pacs.records import StoreResult

log = logging.getLogger(__name__)
OUTBOX = "pacs"
"""The sub-folder of a run folder holding the instances to send."""


@dataclass
class PacsSegmentResult:
    """What :func:`segment_from_pacs` did.

    Attributes:
        study: The segmentation run (``study.result.volumes_ml``, ``study.timings_s``...).
        files: The instances to file back: ``[out_dir/pacs/seg.dcm, out_dir/pacs/sr.dcm]``.
        stored: The store's outcome; ``None`` for a dry run.
    """

    study: Any  # mrimaster.segmentation.study.StudyResult
    files: list[Path]
    stored: StoreResult | None


def segment_from_pacs(pacs: Pacs, study_uid: str, out_dir: Path, *, seg_model: Any,
                      model_version: str, dry_run: bool = False, config: Any = None,
                      tta: bool = False) -> PacsSegmentResult:
    """Retrieve ``study_uid``, segment it into ``out_dir``, and store the SEG + SR back.

    Args:
        pacs: The PACS to read from and write to.
        study_uid: The study's StudyInstanceUID.
        out_dir: Run folder (``seg.nii.gz`` or ``wt.nii.gz``, ``volumes.json``,
            ``pacs/seg.dcm``, ``pacs/sr.dcm``...).
        seg_model: A loaded segmenter (``load_segmenter_for_inference``).
        model_version: Recorded in the SEG and SR (e.g. ``default@<sha256[:12]>``).
        dry_run: Write the files, send nothing.
        config: ``PrepareConfig`` (default: working spacing of the model, skull stripping auto).
        tta: Test-time augmentation.

    Raises:
        PacsError: retrieval failed or was incomplete, or the store failed (the message says
            which instances were stored and that ``mrimaster pacs send OUT_DIR`` retries).
        DataError: the study cannot be segmented (as :func:`segment_study`).
    """
    from mrimaster.imaging.prepare import PrepareConfig
    from mrimaster.pacs.results import write_results
    from mrimaster.segmentation.study import segment_study

    config = config or PrepareConfig(spacing_mm=float(min(seg_model.spacing)))
    with tempfile.TemporaryDirectory(prefix="mrimaster-pacs-") as tmp:
        folder = Path(tmp) / "study"
        pacs.retrieve_study(study_uid, folder)
        study = segment_study(seg_model, folder, out_dir, config, tta, model_version)
        if not study.prepared.source_files:
            raise DataError(f"study {study_uid} gave no DICOM reference series",
                            "check the study holds MR series")
        files = write_results(out_dir, study.prepared.source_files,
                              model_version=model_version, folder=out_dir / OUTBOX)
    import pydicom

    for path in files:
        got = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        if got != study_uid:  # never file results into another study
            raise DataError(f"{path.name} belongs to study {got}, not {study_uid}",
                            "report this: the results were not sent")
    if dry_run:
        log.info("dry run: %s not sent", ", ".join(str(p) for p in files))
        return PacsSegmentResult(study, files, None)
    return PacsSegmentResult(study, files, send_results(pacs, out_dir))


def outbox(folder: Path) -> list[Path]:
    """The instances to send from ``folder``: a run folder's ``pacs/*.dcm``, or the
    ``*.dcm`` of a folder given directly.

    Raises:
        DataError: nothing to send there.
    """
    where = folder / OUTBOX if (folder / OUTBOX).is_dir() else folder
    files = sorted(where.glob("*.dcm"))
    if not files:
        raise DataError(f"no DICOM files (*.dcm) to send in {where}",
                        "pass the --out folder of `mrimaster pacs segment`")
    return files


def send_results(pacs: Pacs, folder: Path) -> StoreResult:
    """Send the instances of ``folder`` (see :func:`outbox`) in one STOW-RS request.

    Each outcome is appended to ``sent.json`` beside them.

    Returns:
        The store's outcome, every instance stored.

    Raises:
        PacsError: the store failed or refused some instances; the message names what was
            stored and what was not, and says that sending again is safe.
    """
    import pydicom

    files = outbox(folder)
    names = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p.name
             for p in files}
    retry = f"`mrimaster pacs send {folder}` sends the same instances again, which is safe"
    try:
        result = pacs.store(files)
    except PacsError as exc:
        _record(files[0].parent, names, None, str(exc.message))
        hint = (exc.hint or "retry later").replace("`mrimaster pacs send DIR`",
                                                   f"`mrimaster pacs send {folder}`")
        raise PacsError(f"{exc.message} (nothing sent of {', '.join(names.values())})",
                        f"{hint}; the files are in {files[0].parent}", exc.status) from None
    _record(files[0].parent, names, result, None)
    if not result.ok:
        stored = ", ".join(names.get(u, u) for u in result.stored) or "nothing"
        failed = "; ".join(f"{names.get(u, u)}: {why}" for u, why in result.failed.items())
        raise PacsError(f"the PACS at {pacs.config.url} stored {stored} but refused {failed}",
                        f"check the PACS log for why; {retry} (it re-stores the same UIDs)")
    log.info("stored %s in the PACS", ", ".join(names.values()))
    return result


def _record(folder: Path, names: dict[str, str], result: StoreResult | None,
            error: str | None) -> None:
    path = folder / "sent.json"
    history = json.loads(path.read_text()) if path.is_file() else []
    history.append({"at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "instances": names, "error": error,
                    "stored": [names.get(u, u) for u in result.stored] if result else [],
                    "failed": {names.get(u, u): w for u, w in result.failed.items()}
                    if result else {}})
    path.write_text(json.dumps(history, indent=2) + "\n")
