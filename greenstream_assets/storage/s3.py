"""The S3 (or S3-compatible) implementation of the blob store.

Keys are relative to ``s3://bucket/prefix/``; what is written is checked to stay under that prefix.
A PUT is atomic on S3: a reader sees the previous object or the new one, never a part, so every
object the lake publishes (a day's archive file, a day's quarantine) is a single PUT.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError

from greenstream_assets.storage.blobs import ObjectInfo, UnreadableObject, check_key

# Errors that say nothing against the object: the service or the pipeline's own credentials are
# at fault, and a later attempt (the step's RetryPolicy, the next run) may read it. Raised as
# they are; marking 50,000 files failed for an expired token would lose them.
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "InternalError",
        "ServiceUnavailable",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "NoSuchBucket",
    }
)
_GONE_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
# What an unreadable object's note says, by S3 error code.
_UNREADABLE_REASONS = {"InvalidObjectState": "archived_object", "AccessDenied": "access_denied"}


def read_error(key: str, err: ClientError) -> Exception:
    """What a failed GET of a listed ``key`` means: gone since the listing (``FileNotFoundError``),
    there but never readable as it is (``UnreadableObject``: archived to Glacier, access denied,
    any other 4xx), or ``err`` itself when a retry may succeed (throttling, 5xx, credentials)."""
    error = err.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in _GONE_CODES:
        return FileNotFoundError(f"{key!r} is gone since it was listed ({code})")
    if code in _TRANSIENT_CODES or status == 429 or not 400 <= status < 500:  # 5xx included
        return err
    detail = f"S3 GetObject: {code}: {error.get('Message', '')}".rstrip(": ")
    if error.get("StorageClass"):
        detail += f" (storage class {error['StorageClass']})"
    return UnreadableObject(key, _UNREADABLE_REASONS.get(code, "unreadable_object"), detail)


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix/``); the prefix may be empty."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    prefix = parsed.path.strip("/")
    if prefix:
        check_key(prefix)
        prefix += "/"
    return parsed.netloc, prefix


class S3BlobStore:
    # Each request is a network round trip: many in flight keep a day of per-meter files moving.
    io_workers = 16

    def __init__(self, url: str, client_factory: Callable[[], Any]) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        # boto3 clients are thread-safe; one per store, made on first use (never at import).
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                # Every key, a dotted name (".keep", ".m2.csv") included: a folder store hides
                # dotted names as its own in-flight temporary files, and S3 has none.
                if not key:
                    continue
                yield ObjectInfo(key, int(item["Size"]), item["ETag"].strip('"'))

    def read(self, key: str) -> bytes:
        # A listed key is read exactly as listed (S3 keys are opaque: "a/../b" is one key under
        # the prefix); whatever the pipeline writes goes through check_key.
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except ClientError as err:
            raise read_error(key, err) from err

    def read_tail(self, key: str, size: int) -> bytes:
        # A suffix range: S3 returns the whole object when it is shorter than ``size``.
        return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes=-{size}")[
            "Body"
        ].read()

    def read_range(self, key: str, start: int, size: int) -> bytes:
        if size <= 0:
            return b""
        return self.client.get_object(
            Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes={start}-{start + size - 1}"
        )["Body"].read()

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)["ContentLength"])

    def write(self, key: str, data: bytes, *, durable: bool = True, cached: bool = True) -> None:
        # A PUT that returned is durable: nothing to defer, and nothing is cached here.
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + check_key(key), Body=data)

    def sync(self) -> None:
        """Nothing to do: every PUT was durable when it returned."""

    def read_to_file(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, self.prefix + key, str(path))

    def write_file(self, key: str, path: Path) -> None:
        # Large files go up in parts; the object appears only when the upload completes.
        self.client.upload_file(str(path), self.bucket, self.prefix + check_key(key))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + check_key(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.prefix + check_key(key))
        except self.client.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True
