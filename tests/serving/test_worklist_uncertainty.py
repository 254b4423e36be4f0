"""The worklist's "most uncertain first" order: 3D cases by their segmentation's
uncertainty score (highest first), cases without one (2D, older 3D results) last."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mrimaster.serving.app import create_app
from mrimaster.serving.context import AppContext
from mrimaster.storage import repository as repo
from tests.serving.conftest import DOCTOR_PASSWORD, bearer, make_ctx


@pytest.fixture
def wctx(tmp_path: Path, db_url: str) -> Iterator[AppContext]:
    context = make_ctx(tmp_path, db_url, None)
    yield context
    context.engine.dispose()


def add(ctx: AppContext, kind: str, name: str, result: dict[str, Any]) -> int:
    with ctx.sessions() as db:
        admin = repo.get_user(db, "admin")
        assert admin is not None
        case = repo.add_case(db, kind, name, admin, {}, result, "ai-read", name, "m@1")
        db.commit()
        return case.id


def u(score: float) -> dict[str, Any]:
    return {"volumes_ml": {"WT": 1.0, "TC": 0.5, "ET": 0.1},
            "uncertainty": {"method": "test-time mirroring disagreement (2 passes)",
                            "wt_dice_between_passes": 1 - score, "wt_volume_change_ml": 0.3,
                            "score": score}}


def test_most_uncertain_first(wctx: AppContext) -> None:
    low = add(wctx, "3d", "low", u(0.05))
    old = add(wctx, "3d", "old", {"volumes_ml": {"WT": 1.0, "TC": None, "ET": None}})
    high = add(wctx, "3d", "high", u(0.4))
    two_d = add(wctx, "2d", "flat", {"label": "glioma_tumor", "confidence": 0.6,
                                              "uncertainty": 0.9})
    mid = add(wctx, "3d", "mid", u(0.2))
    with wctx.sessions() as db:
        rows, total = repo.list_cases(db, repo.CaseFilter(sort="uncertain"))
        assert total == 5
        ids = [c.id for c in rows]
        assert ids[:3] == [high, mid, low]
        assert set(ids[3:]) == {old, two_d}
        newest, _ = repo.list_cases(db, repo.CaseFilter())
        assert [c.id for c in newest] == sorted(ids, reverse=True)
        paged, _ = repo.list_cases(db, repo.CaseFilter(sort="uncertain", page=2, per_page=2))
        assert [c.id for c in paged] == [low, ids[3]]
        only_3d, n3 = repo.list_cases(db, repo.CaseFilter(kind="3d", sort="uncertain"))
        assert n3 == 4 and [c.id for c in only_3d] == [high, mid, low, old]
    client = TestClient(create_app(wctx))
    doctor = bearer(client, "doctor", DOCTOR_PASSWORD)
    page = client.get("/?sort=uncertain&kind=3d", headers=doctor)
    assert page.status_code == 200, page.text
    assert [int(x) for x in re.findall(r'<tr data-case="(\d+)"', page.text)] == [
        high, mid, low, old]
    assert '<option value="uncertain" selected' in page.text
    assert "uncertainty 0.40" in page.text
    # an unknown order is the default one
    plain = client.get("/?sort=bogus", headers=doctor)
    assert plain.status_code == 200
    assert [int(x) for x in re.findall(r'<tr data-case="(\d+)"', plain.text)] == [
        mid, two_d, high, old, low]
