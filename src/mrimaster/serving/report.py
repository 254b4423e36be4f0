"""The PDF report of a case: images, the AI read with its uncertainty, the doctor's decision,
the model version and the date (matplotlib's PDF backend: no extra dependency)."""

from __future__ import annotations

import io
import textwrap
from typing import Any

import numpy as np
from PIL import Image

from mrimaster.serving.context import AppContext
from mrimaster.storage.tables import Case, utcnow


def _image(ctx: AppContext, case: Case, role: str) -> np.ndarray | None:
    digest = case.files.get(role)
    if not isinstance(digest, str) or not ctx.store.exists(digest):
        return None
    with Image.open(io.BytesIO(ctx.store.read(digest))) as im:
        return np.asarray(im.convert("RGBA" if role.startswith("cam/") else "L"))


def _ai_lines(case: Case, reviewed: dict[str, Any] | None = None) -> list[str]:
    r = case.result or {}
    if case.kind == "2d":
        lines = [f"AI status: {r.get('status')}" + (f" ({r.get('reason')})" if r.get("reason")
                                                    else "")]
        if r.get("label") is not None:
            lines.append(f"AI class: {r['label']}, calibrated probability "
                         f"{r.get('confidence', 0):.3f}")
            probs = r.get("probabilities") or {}
            lines.append("probabilities: " + ", ".join(f"{k} {v:.3f}" for k, v in probs.items()))
        lines.append(f"uncertainty: {r.get('uncertainty', float('nan')):.3f}")
        return lines
    def listed(vols: dict[str, Any]) -> str:
        return ", ".join(f"{k} {'not assessable' if v is None else f'{v:.1f}'}"
                         for k, v in vols.items())

    lines = []
    if r.get("status"):  # the trust decision (results written before it have none)
        lines += textwrap.wrap(f"AI status: {r['status']}" + (
            f" ({r['reason']})" if r.get("reason") else ""), 100,
            subsequent_indent="  ")
    lines.append("AI segmentation, volumes (mL): " + listed(r.get("volumes_ml") or {}))
    if reviewed is not None and reviewed.get("volumes_ml"):
        lines.append(f"Reviewed mask (version {reviewed['number']} by {reviewed['author']}), "
                     "volumes (mL): " + listed(reviewed["volumes_ml"]))
    return lines


def case_pdf(ctx: AppContext, case: Case, view: dict[str, Any],
             reviewed: dict[str, Any] | None = None) -> bytes:
    """One A4 page: header, AI read (and the reviewed mask's volumes, ``reviewed``: a
    :func:`mrimaster.serving.masks.reviewed` view), the doctor's decisions, the image and its
    Grad-CAM."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69))
    lines = [f"MRIMaster case {case.id} ({case.kind.upper()}), patient {case.pseudonym}",
             f"uploaded {case.created_at:%Y-%m-%d %H:%M} UTC, status {case.status}",
             f"model {case.model}", "", *_ai_lines(case, reviewed), ""]
    reviews = view.get("reviews") or []
    if reviews:
        for rv in reviews:
            decision = "confirmed" if rv["agrees"] else "corrected to"
            lines.append(f"Doctor {rv['reviewer']} {decision} {rv['label'] or ''} "
                         f"on {rv['at'][:16]}" + ("" if rv["mask_ok"] is None else
                                                  f", mask {'good' if rv['mask_ok'] else 'wrong'}"))
            if rv["comment"]:
                lines += ["  " + t for t in textwrap.wrap(rv["comment"], 90)]
    else:
        lines.append("Not reviewed by a doctor yet: the AI read alone is not a diagnosis.")
    lines += ["", f"report made {utcnow():%Y-%m-%d %H:%M} UTC"]
    fig.text(0.06, 0.96, "\n".join(lines), va="top", family="monospace", fontsize=8.5)
    image = _image(ctx, case, "image")
    layers = (case.result or {}).get("layers") or []
    if image is not None:
        ax = fig.add_axes((0.06, 0.08, 0.42, 0.42))
        ax.imshow(image, cmap="gray")
        ax.set_title("original", fontsize=9)
        ax.axis("off")
        cam = _image(ctx, case, f"cam/{layers[-1]['name']}") if layers else None
        if cam is not None:
            ax2 = fig.add_axes((0.52, 0.08, 0.42, 0.42))
            ax2.imshow(image, cmap="gray")
            ax2.imshow(cam)
            ax2.set_title(f"Grad-CAM, {layers[-1]['name']}", fontsize=9)
            ax2.axis("off")
    for role, title, box in (("overlay_planes", "segmentation", (0.06, 0.08, 0.88, 0.45)),):
        img = _image(ctx, case, role) if role in case.files else None
        if img is not None:
            ax3 = fig.add_axes(box)
            ax3.imshow(img, cmap="gray")
            ax3.set_title(title, fontsize=9)
            ax3.axis("off")
    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": f"MRIMaster case {case.id}"}) as pdf:
        pdf.savefig(fig)
    return buf.getvalue()
