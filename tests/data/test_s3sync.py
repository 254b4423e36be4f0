"""``mrimaster data push|pull`` against a local S3 (moto's server): checksums, resuming,
verification, refusal of keys that would escape the folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mrimaster.data.s3sync import pull, push
from mrimaster.errors import DataError
from tests.serving.server import free_port


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                       "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3")
    client.create_bucket(Bucket="mri")
    yield client
    server.stop()


def test_push_pull_round_trip_resumes_and_verifies(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    (src / "glioma").mkdir(parents=True)
    (src / "glioma" / "a.png").write_bytes(b"A" * 1000)
    (src / "notes.txt").write_text("hello")
    first = push(src, "s3://mri/datasets/demo")
    assert sorted(first.copied) == ["glioma/a.png", "notes.txt"] and first.bytes == 1005
    # nothing changed: nothing is sent again; one changed file: only it
    assert push(src, "s3://mri/datasets/demo").copied == []
    (src / "notes.txt").write_text("changed")
    again = push(src, "s3://mri/datasets/demo")
    assert again.copied == ["notes.txt"] and again.skipped == ["glioma/a.png"]
    s3.put_object(Bucket="mri", Key="datasets/demo/", Body=b"")  # a console's folder marker
    s3.put_object(Bucket="mri", Key="datasets/demo/empty-dir/", Body=b"")
    dest = tmp_path / "dest"
    got = pull("s3://mri/datasets/demo", dest)
    assert sorted(got.copied) == ["glioma/a.png", "notes.txt"]
    assert (dest / "notes.txt").read_text() == "changed"
    assert (dest / "glioma" / "a.png").read_bytes() == b"A" * 1000
    # an interrupted pull resumes: identical files are skipped, a missing one fetched
    (dest / "notes.txt").unlink()
    resumed = pull("s3://mri/datasets/demo", dest)
    assert resumed.copied == ["notes.txt"] and resumed.skipped == ["glioma/a.png"]
    assert not list(dest.rglob(".*.tmp"))


def test_pull_refuses_a_corrupted_object(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket="mri", Key="p/x.bin", Body=b"tampered",
                  Metadata={"sha256": "0" * 64})
    with pytest.raises(DataError, match="does not match its SHA-256"):
        pull("s3://mri/p", tmp_path / "d")
    assert not (tmp_path / "d" / "x.bin").exists()
    assert not list((tmp_path / "d").rglob(".*.tmp"))


def test_pull_refuses_keys_escaping_the_folder(s3, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    s3.put_object(Bucket="mri", Key="q/../../escape.txt", Body=b"x")
    with pytest.raises(DataError, match="outside"):
        pull("s3://mri/q", tmp_path / "d")
    assert not (tmp_path / "escape.txt").exists()


def test_bad_urls_and_missing_buckets_say_what_to_do(s3: object, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="s3://bucket/prefix"):
        push(tmp_path, "http://example.org/x")
    with pytest.raises(DataError, match="credentials"):
        pull("s3://no-such-bucket/x", tmp_path / "d")
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1")
