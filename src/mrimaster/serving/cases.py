"""Cases: storing an uploaded 2D slice with its AI read and Grad-CAM maps, and reviews."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import secrets
import unicodedata
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy.orm import Session

from mrimaster.data.dicom import dicom_to_gray, is_dicom, read_dicom
from mrimaster.data.images import load_slice_file, prepare_slice, slice_geometry, to_original_grid
from mrimaster.errors import ImageLoadError, MRIMasterError
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from mrimaster.storage.deid import deidentify, pseudonym
from mrimaster.storage.tables import Case, User

log = logging.getLogger(__name__)


class UploadError(MRIMasterError):
    """An upload the app refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, hint: str | None = None, status: int = 400) -> None:
        super().__init__(message, hint)
        self.status = status


def error_status(exc: MRIMasterError) -> int:
    """The HTTP status of a refused request: 413 too large, 415 not a decodable image, the
    upload error's own status, else 400."""
    from mrimaster.storage.objectstore import UploadTooLarge

    if isinstance(exc, UploadError):
        return exc.status
    if isinstance(exc, UploadTooLarge):
        return 413
    if isinstance(exc, ImageLoadError):
        return 415
    return 400


class BurnedInRefused(UploadError):
    """A DICOM that declares text burned into its pixels (or is a secondary capture): refused
    until a doctor who has seen it confirms; ``preview`` is the de-identified image as PNG
    bytes, for that doctor's eyes only (never stored)."""

    def __init__(self, message: str, hint: str, preview: bytes | None = None) -> None:
        super().__init__(message, hint, 409)
        self.preview = preview

    def answer(self) -> dict[str, str]:
        """The JSON body of the 409 answer: error, hint, and the preview as base64 PNG."""
        body = {"error": self.message, "hint": self.hint or ""}
        if self.preview is not None:
            body["preview_png"] = base64.b64encode(self.preview).decode("ascii")
        return body


MAX_ID = 2**31 - 1
"""Largest row id (PostgreSQL ``integer``); larger ids in a URL are "not found", not a crash."""

PATH = re.compile(r"(?<![^\s'\"(=:\[])/(?:[^\s/'\"]+/)+")
"""An absolute path's folders (``/tmp/x/``, ``/srv/app/store/``): stripped from what users see."""


def hide_folders(text: str, *roots: Path | str, inside: str = "") -> str:
    """``text`` with each of the server's folders ``roots`` (app dir, temporary folders)
    replaced by ``inside`` in the paths under it, and named "a server folder" where it
    stands alone."""
    for root in sorted({str(r).rstrip("/") for r in roots if str(r)}, key=len, reverse=True):
        text = text.replace(root + "/", inside).replace(root, "a server folder")
    return text


def strip_paths(text: str, *roots: Path | str) -> str:
    """``text`` without server paths: :func:`hide_folders`, then any other absolute path's
    folders are removed (a file's own name is kept: it names the user's data, not the
    server). For texts that name no API path (job errors)."""
    return PATH.sub("", hide_folders(text, *roots, inside="/"))


def patient_pseudonym(ctx: AppContext, reference: str) -> str:
    """The pseudonym of a patient reference typed by the user (the reference itself is never
    stored); an empty reference is a new anonymous patient."""
    ref = reference.strip()
    return pseudonym(ctx.key, ref) if ref else "P-anon-" + secrets.token_hex(4)


HEATMAP_PNG_LEVEL = 1
"""zlib level of the heatmap overlays' PNGs (lossless at any level). Measured on 512 x 512
overlays of real slices (2 cores of an AMD EPYC, 2026-12-06): level 1 took 8.8 ms and 141 KB
each, Pillow's default 6 took 24.6 ms and 97 KB; a 2D read stores one per selector layer."""


def png_bytes(array: np.ndarray, compress_level: int = 6) -> bytes:
    """``(H, W)`` uint8 or ``(H, W, 4)`` uint8 RGBA -> PNG bytes (zlib ``compress_level``
    0-9: the pixels are the same at every level, only time and size change)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def heatmap_rgba(cam: np.ndarray) -> np.ndarray:
    """A Grad-CAM map as a transparent colour overlay.

    Args:
        cam: ``(H, W)`` float >= 0 on the original image's grid.

    Returns:
        ``(H, W, 4)`` uint8: the jet colour map of ``cam / max``, alpha rising with the value
        (weak evidence is see-through).
    """
    from matplotlib import colormaps

    peak = float(cam.max())
    v = cam / peak if peak > 0 else np.zeros_like(cam)
    rgba = colormaps["jet"](v)
    rgba[..., 3] = np.clip(v * 1.2, 0, 1) * 0.85
    return (rgba * 255).round().astype(np.uint8)


def decode_upload(ctx: AppContext, path: Path, filename: str, reference: str,
                  confirm_burned_in: bool = False
                  ) -> tuple[np.ndarray, str, dict[str, bytes], str | None]:
    """Decode and check an uploaded slice; nothing is stored yet.

    DICOM is de-identified (its patient's pseudonym taken from its tags) and kept as such;
    every image is also kept re-encoded as PNG (other formats' metadata dropped).

    Args:
        confirm_burned_in: The doctor has seen the image and confirms that a DICOM declaring
            burned-in annotation (or a secondary capture) may be stored.

    Returns:
        ``(gray (H, W) uint8, pseudonym, role -> bytes to store, burned-in reason or None)``.

    Raises:
        UploadError: empty, not an image, truncated, too large, a DICOM without pixels.
        BurnedInRefused: a DICOM declaring burned-in annotation, not confirmed (409).
    """
    from mrimaster.storage.deid import burned_in_reason

    if path.stat().st_size == 0:
        raise UploadError(f"{filename}: the file is empty", "choose the image file again")
    burned: str | None = None
    if is_dicom(path):
        ds = read_dicom(path, filename)
        gray = dicom_to_gray(ds, filename)
        burned = burned_in_reason(ds)
        alias = deidentify(ds, ctx.key)
        if burned and not confirm_burned_in:
            raise BurnedInRefused(
                f"{filename}: {burned}; text in the pixels (a name, a date) is not removed by "
                "de-identification, so it is not stored unless a doctor confirms",
                "look at the preview: if it shows no patient identifier, upload the file again "
                "with 'confirm burned-in annotation' (API: confirm_burned_in=true); else "
                "export the series without the annotation", png_bytes(gray))
        buf = io.BytesIO()
        ds.save_as(buf)
        blobs = {"dicom": buf.getvalue()}
    else:
        try:
            gray, _ = load_slice_file(path)
        except ImageLoadError as exc:  # name the user's file, not the server's temporary one
            raise ImageLoadError(exc.message.replace(str(path), filename), exc.hint) from exc
        alias = patient_pseudonym(ctx, reference)
        blobs = {}
    if min(gray.shape) < 32:
        raise UploadError(f"{filename}: {gray.shape[1]}x{gray.shape[0]} pixels is too small "
                          "to be an MRI slice", "upload the full-resolution slice")
    blobs["image"] = png_bytes(gray)
    return gray, alias, blobs, burned


def grad_cam_files(ctx: AppContext, gray: np.ndarray, label: str | None = None,
                   only: set[str] | None = None
                   ) -> tuple[dict[str, bytes], list[dict[str, str]]]:
    """Grad-CAM maps of class ``label`` (default: PyTorch's predicted class) at layers of the
    selector, as PNG overlays on the original image's grid; returns ``(role -> PNG bytes,
    every layer of the selector)``. The read shown may come from an int8 export whose class
    can, rarely, differ from PyTorch's: the map then still explains the class shown.

    Args:
        ctx: The app.
        gray: ``(H, W)`` uint8, the slice as stored.
        label: The class explained.
        only: The layers to map (names); ``None``: the ones the forward pass gives alone
            (method ``cam``), or the default layer when none does. The upload maps those; the
            page asks for another layer when the doctor chooses it
            (:func:`heatmap_on_demand`).

    A layer pooled straight into the linear head (method ``cam``, the default one) gets its map
    from the forward pass alone (:mod:`mrimaster.explain.forward_cam`: there Grad-CAM is CAM);
    the other layers share that forward pass and one backward pass that stops at the
    shallowest of them. With only ``cam`` layers there is no backward pass, and when the
    served runtime is an exported graph the map comes from that graph's own pass
    (:func:`mrimaster.explain.forward_cam.graph_cam`), not from PyTorch."""
    from contextlib import ExitStack

    from mrimaster.data.transforms import eval_batch
    from mrimaster.explain.cam import CAMResult, GradCAM, explain_layers
    from mrimaster.explain.forward_cam import ForwardCAM, graph_cam

    served = ctx.models_or_fail()
    clf, every = served.cam_model()
    if only is None:
        only = {layer.name for layer in every if layer.method == "cam"} or {every[-1].name}
    layers = [layer for layer in every if layer.name in only]
    prepared = prepare_slice(gray, clf.image_size)[None]
    target = clf.classes.index(label) if label in clf.classes else None
    by_gradient = [layer for layer in layers if layer.method != "cam"]
    results: dict[str, CAMResult] = {}
    runtime = served.classifier.model.runtime
    if not by_gradient and len(layers) == 1 and hasattr(runtime, "feature_map"):
        try:
            results = {layers[0].name: graph_cam(runtime, prepared, target)}
        except MRIMasterError as exc:  # no pooled feature map in this graph: PyTorch's
            log.warning("heatmap from PyTorch: %s", exc.message)
    offered = [{"name": layer.name, "label": layer.label} for layer in every]
    if len(results) == len(layers):  # the graph gave the one map asked for
        return _heatmap_files(gray, layers, results), offered
    x = eval_batch(prepared)
    with ExitStack() as stack:  # every layer from one forward pass (and one backward pass)
        forward = {layer.name: stack.enter_context(ForwardCAM(clf.net, layer.name))
                   for layer in layers if layer.method == "cam"}
        cams = [stack.enter_context(GradCAM(clf.net, layer.name)) for layer in by_gradient]
        if cams:
            results = dict(zip([layer.name for layer in by_gradient],
                               explain_layers(cams, x, target), strict=True))
            first = next(iter(results.values()))
            logits, classes = first.logits, first.classes.tolist()
            for name, fcam in forward.items():  # from the same forward pass
                results[name] = fcam.result(x.shape[-2:], logits, classes)
        else:
            results = {name: fcam(x, target) for name, fcam in forward.items()}
    return _heatmap_files(gray, layers, results), offered


def _heatmap_files(gray: np.ndarray, layers: list[Any], results: dict[str, Any]
                   ) -> dict[str, bytes]:
    """``cam/<layer>`` -> PNG overlay of each layer's map on the original image's grid."""
    geometry = slice_geometry(gray)
    files: dict[str, bytes] = {}
    for layer in layers:
        on_original = to_original_grid(results[layer.name].upsampled[0], geometry, gray.shape)
        files[f"cam/{layer.name}"] = png_bytes(heatmap_rgba(on_original), HEATMAP_PNG_LEVEL)
    return files


def heatmap_on_demand(ctx: AppContext, db: Session, case: Case, role: str) -> str | None:
    """The stored heatmap ``role`` (``cam/<layer>``) of a 2D case, made now when the upload
    did not (a layer of the selector the doctor chose); its digest, or ``None`` when the case
    offers no such layer or the model that read it is not the one loaded (a map of another
    model would not explain that read). It explains the class the case's read showed, from
    the slice as stored, and is kept with the case's files."""
    layer = role.removeprefix("cam/")
    result = case.result or {}
    offered = {entry.get("name") for entry in result.get("layers") or []}
    if case.kind != "2d" or not role.startswith("cam/") or layer not in offered or \
            not isinstance(case.files.get("image"), str) or \
            case.model != ctx.models_or_fail().version:
        return None
    gray = np.asarray(Image.open(io.BytesIO(ctx.store.read(case.files["image"]))).convert("L"))
    with ctx.infer_lock:
        db.refresh(case)  # another request may have made it, or another layer, meanwhile
        if isinstance(case.files.get(role), str):
            return str(case.files[role])
        made, _ = grad_cam_files(ctx, gray, result.get("label"), {layer})
        if role not in made:  # the model's layers changed since the upload
            return None
        digest = ctx.store.put_bytes(made[role])
        case.files = {**case.files, role: digest}
        db.commit()
    return digest


def classify_upload(ctx: AppContext, db: Session, user: User, path: Path, filename: str,
                    reference: str = "", gradcam: bool = True,
                    confirm_burned_in: bool = False) -> Case:
    """Store an uploaded 2D slice as a case with its AI read.

    The prediction carries every trust field (status, reason, calibrated probabilities,
    uncertainty); the Grad-CAM maps are made unless the image is rejected (a map of an image
    the model does not know would look like evidence). The case row is written only after
    every file is in the store. The file's name is never stored (it often holds the patient's
    name or record number): only the pseudonym names the patient.

    Raises:
        UploadError, ImageLoadError: the upload is refused (nothing is stored for a case).
        BurnedInRefused: burned-in annotation, not confirmed (nothing is stored).
    """
    models = ctx.models_or_fail()
    gray, alias, blobs, burned = decode_upload(ctx, path, filename, reference,
                                               confirm_burned_in)
    with ctx.store.temporary(".png") as tmp:
        # the input checks see the file as uploaded (colour included); DICOM as displayed
        if "dicom" in blobs:
            tmp.write_bytes(blobs["image"])
        else:  # under a suffix the file finder accepts: Pillow reads by content
            os.link(path, tmp)
        with ctx.infer_lock:
            predictions = models.classifier.predict([tmp])
    if not predictions:
        raise UploadError(f"{filename}: the image could not be read by the classifier")
    p = predictions[0]
    result: dict[str, Any] = {k: v for k, v in asdict(p).items() if k != "path"}
    result["runtime"] = models.classifier.runtime
    result["layers"] = []
    if p.status != "reject" and gradcam:
        with ctx.infer_lock:
            cam_files, result["layers"] = grad_cam_files(ctx, gray, p.label)
        blobs.update(cam_files)
    # every check passed: the files go in the store, then the row that refers to them
    files = {role: ctx.store.put_bytes(data) for role, data in blobs.items()}
    status = "ai-read" if p.status == "ok" else "referred"
    note = f"burned-in annotation confirmed by {user.username}" if burned else ""
    case = repo.add_case(db, "2d", alias, user, files, result, status, p.label, models.version,
                         note=note)
    repo.audit(db, user.username, "upload-2d", f"case {case.id}",
               f"AI {p.status}: {p.label} ({p.confidence})"
               + (f"; {burned}: stored as confirmed by {user.username}" if burned else ""))
    db.commit()
    return case


def clean_text(text: str) -> str:
    """Free text as stored: control characters (a NUL, an escape) removed, line breaks and
    tabs kept, surrounding space stripped."""
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)
                   not in ("Cc", "Cs")).strip()


def review_case(db: Session, case: Case, user: User, label: str | None, agrees: bool,
                mask_ok: bool | None, comment: str, classes: list[str]) -> None:
    """Record the doctor's decision; the case becomes reviewed.

    Raises:
        MRIMasterError: a label that is not a class of the model; a 2D correction without one;
            ``mask_ok`` on a 2D case; a case whose job failed, or a 3D case not segmented yet
            (nothing to review: 409).
    """
    if label is not None and label not in classes:
        raise UploadError(f"unknown class {label!r}", f"choose one of: {', '.join(classes)}",
                          status=422)
    if case.status == "failed":
        why = case.note or "its job failed"
        raise UploadError(f"case {case.id} has no AI read to review: {why}", "correct the "
                          "series' roles and run it again, or upload the study again",
                          status=409)
    if case.kind == "3d" and (case.status == "new" or not (case.result or {}).get("volumes_ml")):
        # "new": queued or running (a DICOM upload already holds its study date; a role
        # change keeps the previous read while the new one runs)
        raise UploadError(f"case {case.id} is not segmented yet", "review it once its "
                          "segmentation has finished", status=409)
    if case.kind == "2d" and mask_ok is not None:
        raise UploadError("mask_ok is for 3D cases (a 2D read has no mask)",
                          "leave mask_ok out", status=422)
    if case.kind == "2d":
        if agrees:
            if case.ai_label is None:
                raise UploadError("the AI gave no class to confirm",
                                  "choose the class yourself", status=422)
            label = case.ai_label
        elif label is None:
            raise UploadError("a correction needs the right class", "choose a class",
                              status=422)
    repo.add_review(db, case, user, label, agrees, mask_ok, clean_text(comment)[:4000])
    repo.audit(db, user.username, "review", f"case {case.id}",
               f"{'confirmed' if agrees else 'corrected'} {label or ''}"
               + ("" if mask_ok is None else f", mask {'good' if mask_ok else 'wrong'}"))
    db.commit()
