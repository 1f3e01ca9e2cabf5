"""Where an archive lives: a folder, or ``s3://bucket/prefix`` on any S3-compatible object store.

``parse_location`` tells the two apart. ``S3Store`` is the few object operations the archive
needs, on boto3: get, put, list, delete, and the two conditional writes the shared ledger is
built on — *create* (``If-None-Match: *``: only if no object has the key) and *replace*
(``If-Match: <etag>``: only if the object is still the one read). The endpoint and the
credentials come from boto3's own configuration (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``,
``AWS_PROFILE``, the shared config files, instance roles): drillbook has no setting of its own.

Layout under the prefix::

    ledger/<seq, 12 digits>.json   one signed entry per object, created conditionally
    HEAD                           the signed end of the ledger, replaced conditionally
    keys/<key_id>.pem              public keys
    runs/<run_id>/...              bundles, as in a folder; MANIFEST is uploaded last
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .. import paths
from ..errors import EvidenceError

if TYPE_CHECKING:
    from botocore.client import BaseClient

SCHEME = "s3://"
# S3's own rule for bucket names; a prefix is path segments without "." or ".." (no escaping it).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
PARALLEL = 16  # concurrent requests: object stores answer many small requests in parallel well


@dataclass(frozen=True)
class S3Archive:
    """An archive at ``s3://bucket/prefix``."""

    bucket: str
    prefix: str  # "" or "a/b" (no leading or trailing slash)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def relative(self, key: str) -> str:
        return key[len(self.prefix) + 1:] if self.prefix else key


def is_s3(text: str) -> bool:
    return text.startswith(SCHEME)


def parse_s3(text: str) -> S3Archive:
    """``s3://bucket[/prefix]``, or an error naming what is wrong with it."""
    bucket, _, prefix = text[len(SCHEME):].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise EvidenceError(f"archive {text!r}: {bucket!r} is not a valid S3 bucket name",
                            "use s3://bucket/prefix (bucket: 3-63 lower-case letters, digits, '-' or '.')")
    if prefix and not all(_SEGMENT.match(s) and s not in (".", "..") for s in prefix.split("/")):
        raise EvidenceError(f"archive {text!r}: the prefix {prefix!r} is not a plain path",
                            "use letters, digits, '.', '_' and '-' between the slashes")
    return S3Archive(bucket, prefix)


def parse_location(text: str) -> Path | S3Archive:
    """A folder (made absolute) or an S3 archive."""
    return parse_s3(text) if is_s3(text) else Path(text).resolve()


def project_archive(project: Path | None = None) -> Path | S3Archive:
    """The archive ``DRILLBOOK_ARCHIVE`` names, else the project's setting, else its folder."""
    location = paths.archive_location(project)
    return parse_s3(location) if is_s3(location) else Path(location).resolve()


def _client() -> BaseClient:
    import boto3  # loaded only by commands that touch an S3 archive
    from botocore.config import Config

    # boto3 reads AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, profiles and instance roles by itself.
    config = Config(max_pool_connections=PARALLEL * 2, retries={"mode": "standard", "max_attempts": 5},
                    s3={"addressing_style": "path"} if _custom_endpoint() else None)
    return boto3.session.Session().client("s3", config=config)


def _custom_endpoint() -> bool:
    """An S3-compatible store at its own address: path-style requests work on every one of them."""
    import os

    return bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))


class S3Store:
    """The object operations of one S3 archive. Errors become ``EvidenceError`` with the key."""

    def __init__(self, archive: S3Archive) -> None:
        self.archive = archive
        self.client = _client()

    def _fail(self, what: str, key: str, exc: Exception) -> EvidenceError:
        return EvidenceError(f"{what} {SCHEME}{self.archive.bucket}/{key} failed: {exc}",
                             "check the bucket, AWS_ENDPOINT_URL_S3 and the credentials (AWS_PROFILE)")

    @staticmethod
    def _code(exc: Exception) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def get(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None if there is no such object."""
        try:
            answer = self.client.get_object(Bucket=self.archive.bucket, Key=key)
            return answer["Body"].read(), answer["ETag"]
        except Exception as exc:
            if self._code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._fail("reading", key, exc) from None

    def put(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.archive.bucket, Key=key, Body=data)
        except Exception as exc:
            raise self._fail("writing", key, exc) from None

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if no object has it (``If-None-Match: *``); False if one does."""
        return self._conditional(key, data, IfNoneMatch="*")

    def replace(self, key: str, data: bytes, etag: str | None) -> bool:
        """Overwrite ``key`` only if it is still the object with ``etag`` (None: only if absent)."""
        if etag is None:
            return self.create(key, data)
        return self._conditional(key, data, IfMatch=etag)

    def _conditional(self, key: str, data: bytes, **condition: str) -> bool:
        try:
            self.client.put_object(Bucket=self.archive.bucket, Key=key, Body=data, **condition)
            return True
        except Exception as exc:
            # 412: the condition failed; 409: another conditional write to the key was in progress.
            if self._code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise self._fail("writing", key, exc) from None

    def list(self, prefix: str) -> dict[str, str]:
        """Every object under ``prefix`` (a key prefix, e.g. ``runs/``): key → ETag."""
        found: dict[str, str] = {}
        try:
            # The whole archive is "<prefix>/": never a sibling prefix that merely starts the same.
            whole = self.archive.key() + "/" if self.archive.prefix else ""
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.archive.bucket, Prefix=self.archive.key(prefix) if prefix else whole)
            for page in pages:
                for item in page.get("Contents", []):
                    found[item["Key"]] = item["ETag"]
        except Exception as exc:
            raise self._fail("listing", self.archive.key(prefix), exc) from None
        return found

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                self.client.delete_object(Bucket=self.archive.bucket, Key=key)
            except Exception as exc:
                raise self._fail("deleting", key, exc) from None

    def upload(self, files: dict[str, Path]) -> None:
        """Put each local file under its key, in parallel; the first failure is raised."""
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            for _ in pool.map(lambda item: self.put(item[0], item[1].read_bytes()), files.items()):
                pass

    def download(self, keys: Iterable[str], target: Path) -> None:
        """Get each object into ``target``/<key relative to the prefix>, in parallel."""
        def one(key: str) -> None:
            got = self.get(key)
            if got is None:
                return  # removed since it was listed
            relative = self.archive.relative(key)
            parts = relative.split("/")
            if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise EvidenceError(f"object {key!r} has a name that is not a plain path",
                                    "someone wrote it outside drillbook: look at it, then remove it")
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(got[0])

        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            for _ in pool.map(one, keys):
                pass
