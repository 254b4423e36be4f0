"""The 3D segmentation job of the web app: a claimed case's volumes through
:func:`mrimaster.segmentation.study.segment_study`, its mask, uncertainty map, pictures and
``volumes.json`` stored, and the case's status set (``referred`` for a result its trust checks
refer, as a referred 2D read); a failed job ends ``failed`` with a message that names the
user's data problem and no server path."""

from __future__ import annotations

import json
import logging
import tempfile
from typing import Any

from mrimaster.errors import MRIMasterError
from mrimaster.serving.cases import strip_paths
from mrimaster.serving.context import AppContext
from mrimaster.serving.studies import JOB_FAILED, OUTPUTS, UNCERTAINTY, roles_of
from mrimaster.storage import repository as repo
from mrimaster.storage.tables import Job

log = logging.getLogger(__name__)


def user_message(ctx: AppContext, exc: BaseException) -> str:
    """What users see of a failed job: an :class:`MRIMasterError`'s message (it names their
    data's problem) without any server path, else :data:`JOB_FAILED`."""
    if not isinstance(exc, MRIMasterError):
        return JOB_FAILED
    return strip_paths(str(exc), ctx.config.app_dir, ctx.store.root, tempfile.gettempdir())


def run_job(ctx: AppContext, job: Job) -> None:
    """Segment a claimed 3D case and store the mask, the volumes and the pictures; the job and
    the case say how it went (never left ``running`` by an error). A failure is logged in full
    and kept in full in the audit log (admins only); the job and the case show
    :func:`user_message`. State and result are written only while ``job.owner`` (this claim's
    token) still owns the job: a worker whose lease expired and was taken over writes nothing.
    """
    try:
        _segment(ctx, job)
    except Exception as exc:  # the job must end in a state, whatever went wrong
        full = f"{type(exc).__name__}: {exc}"
        message = user_message(ctx, exc)
        log.exception("job %d failed", job.id)
        with ctx.sessions() as db:
            if not repo.update_owned_job(db, job.id, job.owner or "", commit=False,
                                         state="failed", message=message[:2000]):
                db.rollback()
                log.warning("job %d: no longer this worker's (claim %s): its failure is not "
                            "written", job.id, job.owner)
                return
            case = repo.get_case(db, job.case_id)
            if case is not None:
                case.status, case.note = "failed", message[:2000]
                repo.audit(db, "system", "segment-failed", f"case {case.id}", full[:4000])
            db.commit()


def _is_output(name: str) -> bool:
    return any(name == o or (o.endswith(("_", "/")) and name.startswith(o)) for o in OUTPUTS)


def _segment(ctx: AppContext, job: Job) -> None:
    from mrimaster.imaging.prepare import PrepareConfig
    from mrimaster.segmentation.outputs import result_mask
    from mrimaster.segmentation.study import segment_study

    models = ctx.models_or_fail()
    with ctx.sessions() as db:
        case = repo.get_case(db, job.case_id)
        if case is None:
            repo.set_job(db, job.id, state="failed", message="the case was deleted")
            return
        files = dict(case.files)
        roles = roles_of(ctx, case)
        repo.set_job(db, job.id, progress=0.05, message="loading the volumes")
    with ctx.store.work_dir() as work:
        folder = work / f"case-{job.case_id}"
        folder.mkdir()
        source = {}
        for role, name in roles.items():
            source[role] = folder / f"{role}.nii.gz"
            source[role].write_bytes(ctx.store.read(files[name]))

        def tell(done: float, what: str) -> None:
            with ctx.sessions() as db:
                repo.set_job(db, job.id, progress=0.1 + 0.8 * done, message=what)

        out = work / "out"
        with ctx.seg_lock:
            seg = models.segmenter().model
            segment_study(seg, source, out, PrepareConfig(spacing_mm=float(min(seg.spacing))),
                          model_version=models.seg_version(), work=work, progress=tell,
                          keep_registered=True)
        with ctx.sessions() as db:
            repo.set_job(db, job.id, progress=0.9, message="storing the mask and the pictures")
        info: dict[str, Any] = json.loads((out / "volumes.json").read_text())
        new = {"mask.nii.gz": ctx.store.put_file(result_mask(out)[0]),
               "brain_mask.nii.gz": ctx.store.put_file(out / "brain_mask.nii.gz")}
        uncertainty = out / str(info.get("uncertainty_file") or UNCERTAINTY)
        if uncertainty.is_file() and uncertainty.parent == out:
            new[UNCERTAINTY] = ctx.store.put_file(uncertainty)
        for png in sorted(out.glob("*.png")):
            new[png.stem] = ctx.store.put_file(png)
        for volume in sorted(out.glob("registered_*.nii.gz")):  # on the mask's grid
            new[f"registered/{volume.name.removeprefix('registered_')}"] = \
                ctx.store.put_file(volume)
    wt = (info.get("volumes_ml") or {}).get("WT")
    with ctx.sessions() as db:
        # the job first: its row stays locked until the commit, and only while still owned
        if not repo.update_owned_job(db, job.id, job.owner or "", commit=False, state="done",
                                     progress=1.0, message="done"):
            db.rollback()
            log.warning("job %d: no longer this worker's (claim %s, lease expired or taken "
                        "over): its result is refused", job.id, job.owner)
            return
        case = repo.get_case(db, job.case_id)
        if case is None:
            db.commit()
            return
        kept = {k: v for k, v in case.files.items() if not _is_output(k)}
        case.files = {**kept, **new}
        dated = (case.result or {}).get("study_date")  # from the upload (follow-up order)
        case.result = {**info, "study_date": dated} if dated else info
        case.ai_label = None if wt is None else f"WT {wt:.1f} mL"
        # as a 2D read: a result its trust checks refer (status "refer") is a referred case
        case.status = ("referred" if info.get("status") == "refer" or info.get("warnings")
                       or info.get("sequence_problems") else "ai-read")
        case.model = models.seg_version()
        repo.audit(db, "system", "segmented", f"case {case.id}", case.ai_label or "")
        db.commit()
