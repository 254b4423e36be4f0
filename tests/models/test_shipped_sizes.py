"""The shipped model folders stay small: at most 10 MB a file and 25 MB a folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrimaster.settings import SHIPPED_MODELS

MAX_FILE = 10_000_000
MAX_FOLDER = 25_000_000


@pytest.mark.parametrize("folder", sorted(p.name for p in SHIPPED_MODELS.iterdir() if p.is_dir()))
def test_shipped_model_folder_is_within_the_budget(folder: str) -> None:
    files = [p for p in (SHIPPED_MODELS / folder).rglob("*") if p.is_file()]
    assert files, f"{folder} is empty"
    sizes = {p.name: p.stat().st_size for p in files}
    too_big = {name: size for name, size in sizes.items() if size > MAX_FILE}
    assert not too_big, f"files over 10 MB in {folder}: {too_big}"
    assert sum(sizes.values()) <= MAX_FOLDER, (folder, sum(sizes.values()))


def test_every_shipped_folder_is_checked() -> None:
    assert {"default", "seg-default", "brain-check"} <= {
        p.name for p in Path(SHIPPED_MODELS).iterdir() if p.is_dir()}
