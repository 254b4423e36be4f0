"""Plain dictionaries of rows for JSON answers and templates."""

from __future__ import annotations

from typing import Any

from mrimaster.storage.tables import Case, Review, User


def user_view(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "role": user.role, "active": user.active,
            "created_at": user.created_at.isoformat()}


def review_view(review: Review, reviewer: str) -> dict[str, Any]:
    return {"reviewer": reviewer, "label": review.label, "agrees": review.agrees,
            "mask_ok": review.mask_ok, "comment": review.comment,
            "at": review.created_at.isoformat()}


def case_view(case: Case, reviews: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A case as the API returns it; files as the URLs that serve them."""
    return {
        "id": case.id, "kind": case.kind, "pseudonym": case.pseudonym, "status": case.status,
        "created_at": case.created_at.isoformat(), "updated_at": case.updated_at.isoformat(),
        "ai_label": case.ai_label, "model": case.model, "result": case.result,
        "note": case.note,
        "files": {role: f"/api/cases/{case.id}/files/{role}" for role in sorted(case.files)},
        "reviews": reviews or []}
