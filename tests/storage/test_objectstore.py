"""The object store's two back-ends: the local folder and S3 (moto's server on loopback).
Put, read, test, delete; server-side encryption; two app instances sharing one bucket; the
clean-up keeps what is referenced or younger than the grace period."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mrimaster.storage.filestore import FileStore
from mrimaster.storage.objectstore import ObjectStore
from mrimaster.storage.s3store import S3Store
from mrimaster.storage.store_url import open_store

BUCKET = "mrimaster-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)
    return s3_endpoint


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return open_store("", tmp_path / "store")
    endpoint = request.getfixturevalue("aws_env")
    prefix = f"t{time.time_ns()}"  # each test its own prefix in the shared bucket
    return open_store(f"s3://{BUCKET}/{prefix}", tmp_path / "store", endpoint)


def test_put_read_exists_delete(store: ObjectStore, tmp_path: Path) -> None:
    data = b"an MRI slice\n" * 1000
    digest = store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.exists(digest) and store.read(digest) == data
    src = tmp_path / "file.bin"
    src.write_bytes(b"\0\1\2" * 5000)
    other = store.put_file(src)
    assert store.read(other) == src.read_bytes() and src.is_file()
    assert store.put_bytes(data) == digest  # content-addressed: the same key
    assert store.all_objects() == sorted([digest, other])
    store.delete(digest)
    assert not store.exists(digest) and store.all_objects() == [other]
    with pytest.raises(ValueError, match="SHA-256"):
        store.exists("../../etc/passwd")


def test_s3_objects_are_encrypted_and_keyed_under_the_prefix(aws_env: str,
                                                             tmp_path: Path) -> None:
    store = open_store(f"s3://{BUCKET}/dept/a", tmp_path / "w", aws_env)
    assert isinstance(store, S3Store)
    digest = store.put_bytes(b"encrypted at rest")
    src = tmp_path / "f"
    src.write_bytes(b"a file")
    digest2 = store.put_file(src)
    for d in (digest, digest2):
        head = store.client.head_object(Bucket=BUCKET, Key=f"dept/a/objects/{d[:2]}/{d}")
        assert head["ServerSideEncryption"] == "AES256"
    assert not any((tmp_path / "w").rglob("*" + digest))  # nothing kept locally


def test_cleanup_keeps_referenced_and_young(store: ObjectStore) -> None:
    referenced = store.put_bytes(b"a case's image")
    orphan = store.put_bytes(b"stored, but its row was never written")
    young_work = store.tmp / "work-young"
    young_work.mkdir()
    old_work = store.tmp / "old-upload.png"
    old_work.write_bytes(b"x")
    hour = 3600.0
    os.utime(old_work, (time.time() - 2 * hour, time.time() - 2 * hour))
    # within the grace period: nothing goes (an upload may be writing its row right now)
    assert store.cleanup({referenced}, grace_s=hour) == (1, 0)
    assert store.all_objects() == sorted([referenced, orphan]) and young_work.exists()
    assert not old_work.exists()
    # an hour later: the orphan goes, the referenced object stays
    later = time.time() + 2 * hour
    assert store.cleanup({referenced}, grace_s=hour, now=later) == (1, 1)
    assert store.all_objects() == [referenced] and not young_work.exists()


def test_a_put_refreshes_an_old_object(tmp_path: Path) -> None:
    """An old unreferenced object that a new upload stores again is young again: the clean-up
    does not take it between the put and the row."""
    store = FileStore(tmp_path / "store")
    digest = store.put_bytes(b"again")
    old = time.time() - 7200
    os.utime(store.path(digest), (old, old))
    store.put_bytes(b"again")
    assert store.cleanup(set(), grace_s=3600) == (0, 0) and store.exists(digest)


def test_cleanup_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from mrimaster.cli.main import main
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import build_context
    from tests.serving.conftest import serve_env

    for name, value in serve_env(tmp_path / "app", f"sqlite:///{tmp_path / 'a.db'}").items():
        monkeypatch.setenv(name, value)
    ctx = build_context(load_serve_config(), load_models=False)
    orphan = ctx.store.put_bytes(b"orphan")
    ctx.engine.dispose()
    assert main(["cleanup"]) == 0  # default grace: a day
    assert "0 unreferenced object(s)" in capsys.readouterr().out and ctx.store.exists(orphan)
    assert main(["cleanup", "--grace-minutes", "0"]) == 0
    assert not ctx.store.exists(orphan)


def test_two_app_instances_share_one_bucket(tmp_path: Path, aws_env: str, db_url: str,
                                            data_root: Path, served_models: object) -> None:
    """A case uploaded through one instance (its own app folder) is read, with its files,
    through another: same database, same bucket, same key from the settings."""
    from fastapi.testclient import TestClient

    from mrimaster.serving.app import create_app
    from mrimaster.serving.config import load_serve_config
    from mrimaster.serving.context import build_context
    from tests.serving.conftest import DOCTOR_PASSWORD, bearer, make_ctx, serve_env

    shared = {"MRIMASTER_STORE_URL": f"s3://{BUCKET}/shared{time.time_ns()}",
              "MRIMASTER_S3_ENDPOINT_URL": aws_env, "MRIMASTER_SECRET_KEY": "cd" * 32}
    one = make_ctx(tmp_path / "one", db_url, served_models, **shared)  # type: ignore[arg-type]
    two = build_context(load_serve_config(serve_env(tmp_path / "two" / "app", db_url,
                                                    **shared)), load_models=False)
    a, b = TestClient(create_app(one)), TestClient(create_app(two))
    image = sorted((data_root / "sartaj-training" / "glioma_tumor").iterdir())[0]
    r = a.post("/api/cases/2d", files={"file": (image.name, image.read_bytes(), "image/jpeg")},
               data={"patient": "Jane Example"}, headers=bearer(a, "doctor", DOCTOR_PASSWORD))
    assert r.status_code == 200, r.text
    case = r.json()
    auth = bearer(b, "doctor", DOCTOR_PASSWORD)
    seen = b.get(f"/api/cases/{case['id']}", headers=auth).json()
    assert seen["pseudonym"] == case["pseudonym"]
    assert set(seen["files"]) == set(case["files"])
    for role in case["files"]:
        there = b.get(f"/api/cases/{case['id']}/files/{role}", headers=auth)
        here = a.get(f"/api/cases/{case['id']}/files/{role}",
                     headers=bearer(a, "doctor", DOCTOR_PASSWORD))
        assert there.status_code == 200 and there.content == here.content and there.content
    assert sorted(one.store.all_objects()) == sorted(two.store.all_objects())
    assert not list((tmp_path / "one" / "app" / "store").rglob("objects"))  # all in S3
    one.engine.dispose()
    two.engine.dispose()
