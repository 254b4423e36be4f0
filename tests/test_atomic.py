"""Files written whole or not at all (mrimaster.atomic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mrimaster.atomic import (
    is_temporary,
    leftovers,
    replaced_whole,
    temporary_name,
    write_whole,
)


@pytest.mark.parametrize("content", ["text: é\n", b"\x00\x01binary"])
def test_write_whole_replaces_the_file_and_leaves_no_temporary(
        tmp_path: Path, content: str | bytes) -> None:
    path = tmp_path / "cv.json"
    path.write_text("old")
    write_whole(path, content)
    expected = content.encode("utf-8") if isinstance(content, str) else content
    assert path.read_bytes() == expected
    assert list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("durable", [False, True])
def test_a_failed_write_keeps_the_old_file(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"previous epoch")
    with pytest.raises(KeyboardInterrupt), replaced_whole(path, durable=durable) as tmp:
        tmp.write_bytes(b"half of the next")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"previous epoch"
    assert not leftovers(path) and list(tmp_path.iterdir()) == [path]


def test_a_durable_write_lands(tmp_path: Path) -> None:
    path = tmp_path / "new.bin"
    with replaced_whole(path, durable=True) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".new.bin.")
        tmp.write_bytes(b"done")
    assert path.read_bytes() == b"done"


def test_leftovers_finds_the_temporaries_of_a_killed_writer_only(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    killed = temporary_name(path)
    killed.write_bytes(b"partial")
    other = temporary_name(tmp_path / "last.pt.bak")
    other.write_bytes(b"not ours")
    assert leftovers(path) == [killed]
    assert temporary_name(path) != temporary_name(path)
    assert is_temporary(killed.name) and not is_temporary(path.name)
    assert leftovers(tmp_path / "[ab].pt") == []  # glob characters in a name are literal
    odd = tmp_path / "[ab].pt"
    (stale := temporary_name(odd)).write_bytes(b"")
    assert leftovers(odd) == [stale]
