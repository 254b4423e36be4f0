"""The S3 back-end of the object store: :class:`S3Store`, objects by SHA-256 in an
S3-compatible bucket (``<prefix>/objects/ab/<digest>``), each put with server-side encryption;
work files stay local. Needs boto3 (``pip install 'mrimaster[aws]'``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrimaster.errors import MRIMasterError
from mrimaster.storage.objectstore import HASH, ObjectStore


class S3Store(ObjectStore):
    """Objects by SHA-256 in an S3-compatible bucket: ``<prefix>/objects/ab/<digest>``, each
    put with server-side encryption (``AES256``). Work files stay local (``root/tmp``).

    Credentials come from boto3's usual chain (environment, profile, instance role).

    Args:
        root: Local folder of the work files.
        bucket: Bucket name.
        prefix: Key prefix ('' for the bucket's top).
        endpoint_url: Another S3-compatible endpoint (MinIO, moto), else AWS.
        client: A ready boto3 S3 client (tests), instead of one made here.
    """

    SSE = "AES256"

    def __init__(self, root: Path, bucket: str, prefix: str = "",
                 endpoint_url: str | None = None, client: Any = None) -> None:
        super().__init__(root)
        try:
            import boto3
        except ImportError as exc:
            raise MRIMasterError("an s3:// store needs boto3, which is not installed",
                                 "pip install 'mrimaster[aws]'") from exc

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url or None)

    def key(self, digest: str) -> str:
        self.check(digest)
        return "/".join(p for p in (self.prefix, "objects", digest[:2], digest) if p)

    def _missing(self, exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    def _head(self, digest: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.key(digest)))
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise

    def exists(self, digest: str) -> bool:
        return self._head(digest) is not None

    def modified(self, digest: str) -> float | None:
        head = self._head(digest)
        return None if head is None else float(head["LastModified"].timestamp())

    def read(self, digest: str) -> bytes:
        body = self.client.get_object(Bucket=self.bucket, Key=self.key(digest))["Body"]
        data = bytes(body.read())
        if hashlib.sha256(data).hexdigest() != digest:
            raise MRIMasterError(f"the stored object {digest[:12]}... is corrupt",
                                 "tell the administrator: the bucket was changed by hand")
        return data

    def delete(self, digest: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(digest))

    def objects_with_times(self) -> Iterator[tuple[str, float]]:
        start = "/".join(p for p in (self.prefix, "objects") if p) + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=start)
        for page in pages:
            for item in page.get("Contents", []):
                name = str(item["Key"]).rsplit("/", 1)[-1]
                if HASH.match(name):
                    yield name, float(item["LastModified"].timestamp())

    # written again when present: an S3 put is atomic and content-addressed keys make it
    # idempotent; it refreshes LastModified, which the clean-up's grace period reads
    def _put_path(self, src: Path, digest: str) -> None:
        self.client.upload_file(str(src), self.bucket, self.key(digest),
                                ExtraArgs={"ServerSideEncryption": self.SSE})

    def _put_data(self, data: bytes, digest: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(digest), Body=data,
                               ServerSideEncryption=self.SSE)
