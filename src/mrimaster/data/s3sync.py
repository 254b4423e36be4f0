"""Copying a data folder to and from S3 (``mrimaster data push|pull``), verified and resumable.

Each object carries the SHA-256 of its file as metadata (``x-amz-meta-sha256``). A transfer
skips every file whose copy on the other side already has the same checksum, so a transfer
that was interrupted resumes where it stopped; each downloaded file is written under a
temporary name, checked against the checksum and only then renamed. Large files go in
multipart uploads (boto3's transfer manager). The endpoint can be redirected (a local test
server, MinIO) with boto3's own ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from mrimaster.atomic import discard_leftovers, is_temporary, replaced_whole
from mrimaster.errors import DataError
from mrimaster.models.paths import file_sha256

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    """What a transfer did: files copied, skipped (already identical), bytes copied."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix without trailing slash)``.

    Raises:
        DataError: not an ``s3://`` URL with a bucket.
    """
    if not url.startswith("s3://") or len(url) <= 5:
        raise DataError(f"not an S3 URL: {url!r}", "write it as s3://bucket/prefix")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise DataError(f"no bucket in {url!r}", "write it as s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _client() -> Any:
    import boto3

    return boto3.client("s3")


def _remote(client: Any, bucket: str, prefix: str) -> dict[str, tuple[str | None, int]]:
    """``{relative key: (sha256 or None, size)}`` of the objects under ``prefix``."""
    out: dict[str, tuple[str | None, int]] = {}
    base = f"{prefix}/" if prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            head = client.head_object(Bucket=bucket, Key=obj["Key"])
            out[obj["Key"][len(base):]] = (head.get("Metadata", {}).get("sha256"), obj["Size"])
    return out


def _friendly(exc: Exception, url: str) -> DataError:
    return DataError(f"S3 transfer with {url} failed: {exc}",
                     "check the bucket name, your AWS credentials and region "
                     "(AWS_PROFILE, AWS_REGION), or AWS_ENDPOINT_URL for a local server")


def push(folder: Path, url: str, progress: bool = False) -> SyncReport:
    """Upload every file under ``folder`` to ``url``, skipping those already there."""
    from botocore.exceptions import BotoCoreError, ClientError

    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder", "pass the folder to upload")
    bucket, prefix = parse_s3_url(url)
    client = _client()
    report = SyncReport()
    try:
        remote = _remote(client, bucket, prefix)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not is_temporary(p.name))
        for path in tqdm(files, desc="push", unit="file", disable=not progress):
            rel = path.relative_to(folder).as_posix()
            digest = file_sha256(path)
            if remote.get(rel, (None, -1))[0] == digest:
                report.skipped.append(rel)
                continue
            key = str(PurePosixPath(prefix) / rel) if prefix else rel
            client.upload_file(str(path), bucket, key,
                               ExtraArgs={"Metadata": {"sha256": digest}})
            report.copied.append(rel)
            report.bytes += path.stat().st_size
    except (BotoCoreError, ClientError) as exc:
        raise _friendly(exc, url) from exc
    return report


def pull(url: str, folder: Path, progress: bool = False) -> SyncReport:
    """Download every object under ``url`` into ``folder``, skipping identical files, each
    verified against its recorded SHA-256 before it takes its name.

    Raises:
        DataError: a key that would escape ``folder``, a checksum mismatch, S3 errors.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = parse_s3_url(url)
    client = _client()
    report = SyncReport()
    root = folder.resolve()
    try:
        remote = _remote(client, bucket, prefix)
        for rel, (digest, size) in tqdm(sorted(remote.items()), desc="pull", unit="file",
                                        disable=not progress):
            if not rel or rel.endswith("/"):  # a "folder" marker object, not a file
                continue
            target = (root / rel).resolve()
            if not target.is_relative_to(root) or target == root:
                raise DataError(f"the object {rel!r} would be written outside {folder}",
                                "pull from a prefix you trust")
            if target.is_file() and digest and file_sha256(target) == digest:
                report.skipped.append(rel)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            discard_leftovers(target)  # of a pull killed while downloading
            key = f"{prefix}/{rel}" if prefix else rel
            with replaced_whole(target) as tmp:  # a failed or corrupted download leaves none
                client.download_file(bucket, key, str(tmp))
                if digest and file_sha256(tmp) != digest:
                    raise DataError(f"{rel}: the download does not match its SHA-256",
                                    "pull again; if it persists the object was changed in S3")
            report.copied.append(rel)
            report.bytes += size
    except (BotoCoreError, ClientError) as exc:
        raise _friendly(exc, url) from exc
    return report
