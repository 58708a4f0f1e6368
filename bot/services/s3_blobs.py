"""Content-addressed blob store on S3-compatible object storage: ``s3://bucket/prefix/ab/cd/<sha256>``.

The same contract as the local BlobStore (bot.services.blobs.Blobs): a blob's key is the SHA-256 of
its bytes, writing the same bytes again refreshes its age, and ``purge_older_than`` deletes blobs last
written before a cutoff (the object's LastModified). An object store never shows half an object, so
no temporary names are needed.

Blobs written to the local directory before the switch keep working: with a ``fallback`` store, a
blob missing from S3 is read from the directory and copied into S3 on first read.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from bot.services.blobs import BlobMissing, BlobStore, validate_blob_id

log = structlog.get_logger(__name__)

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    region: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """``s3://bucket/prefix`` (prefix optional; ``?region=`` optional, default us-east-1)."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError("BLOB_STORE_URL must look like s3://bucket/prefix")
        region = parse_qs(parts.query).get("region", ["us-east-1"])[0]
        return cls(bucket=parts.netloc, prefix=parts.path.strip("/"), region=region)


@dataclass(frozen=True)
class S3Credentials:
    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None


def _is_missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return str(error.get("Code")) in _MISSING_CODES or status == 404


class S3BlobStore:
    """Blobs in one bucket below a prefix; ``start()`` opens the client, ``aclose()`` closes it."""

    def __init__(
        self,
        location: S3Location,
        credentials: S3Credentials,
        *,
        fallback: BlobStore | None = None,
    ) -> None:
        self._location = location
        self._credentials = credentials
        self._fallback = fallback
        self._exit = contextlib.AsyncExitStack()
        self._client: Any = None

    @property
    def location(self) -> S3Location:
        return self._location

    def key_for(self, sha256: str) -> str:
        blob_id = validate_blob_id(sha256)
        path = f"{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"
        return f"{self._location.prefix}/{path}" if self._location.prefix else path

    async def start(self) -> None:
        if self._client is not None:
            return
        session = get_session()
        self._client = await self._exit.enter_async_context(
            session.create_client(
                "s3",
                region_name=self._location.region,
                endpoint_url=self._credentials.endpoint_url,
                aws_access_key_id=self._credentials.access_key_id,
                aws_secret_access_key=self._credentials.secret_access_key,
                config=AioConfig(
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                ),
            )
        )
        log.info("blob_store_opened", bucket=self._location.bucket, prefix=self._location.prefix)

    async def aclose(self) -> None:
        await self._exit.aclose()
        self._client = None

    @property
    def _s3(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3BlobStore.start() was not called")
        return self._client

    def local_file(self, sha256: str) -> None:
        """S3 blobs are not files here."""

    async def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256; the same bytes again refresh the blob's age."""
        sha256 = hashlib.sha256(data).hexdigest()
        await self._s3.put_object(
            Bucket=self._location.bucket,
            Key=self.key_for(sha256),
            Body=data,
            ContentType="application/octet-stream",
        )
        return sha256

    async def get(self, sha256: str) -> bytes:
        key = self.key_for(sha256)
        try:
            response = await self._s3.get_object(Bucket=self._location.bucket, Key=key)
        except ClientError as exc:
            if not _is_missing(exc):
                raise
            return await self._from_fallback(sha256)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def exists(self, sha256: str) -> bool:
        key = self.key_for(sha256)
        try:
            await self._s3.head_object(Bucket=self._location.bucket, Key=key)
        except ClientError as exc:
            if not _is_missing(exc):
                raise
            return self._fallback is not None and await self._fallback.exists(sha256)
        return True

    async def delete(self, sha256: str) -> bool:
        """Remove a blob (and its local original, if any); False when it was in neither."""
        present = await self.exists(sha256)
        await self._s3.delete_object(Bucket=self._location.bucket, Key=self.key_for(sha256))
        if self._fallback is not None:
            await self._fallback.delete(sha256)
        return present

    async def purge_older_than(self, age: timedelta) -> int:
        """Delete blobs last written before now - ``age``; returns how many were deleted."""
        if age < timedelta(0):
            raise ValueError("age must not be negative")
        cutoff = time.time() - age.total_seconds()
        stale: list[str] = []
        paginator = self._s3.get_paginator("list_objects_v2")
        prefix = f"{self._location.prefix}/" if self._location.prefix else ""
        async for page in paginator.paginate(Bucket=self._location.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["LastModified"].timestamp() < cutoff:
                    stale.append(item["Key"])
        for start in range(0, len(stale), _DELETE_BATCH):
            batch = stale[start : start + _DELETE_BATCH]
            await self._s3.delete_objects(
                Bucket=self._location.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
        purged = len(stale)
        if self._fallback is not None:
            purged += await self._fallback.purge_older_than(age)
        log.info("s3_blobs_purged", count=len(stale), older_than_days=age.days)
        return purged

    async def _from_fallback(self, sha256: str) -> bytes:
        if self._fallback is None:
            raise BlobMissing(sha256)
        data = await self._fallback.get(sha256)  # raises BlobMissing when not there either
        await self.put(data)
        log.info("blob_moved_to_s3", sha256=sha256)
        return data
