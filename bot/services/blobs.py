"""Content-addressed blob store on the local disk: ``root/ab/cd/<sha256>``.

Blobs are the stored originals of images (users' uploads and generated images). A blob's name
is the SHA-256 of its bytes, so writing the same image twice is one file. Writes go to a temporary
file in the target directory and are renamed into place, so a reader never sees half a blob.
Every file operation runs in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Final, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)

_SHA256_HEX: Final = re.compile(r"[0-9a-f]{64}")
_TEMP_PREFIX: Final = ".tmp-"
T = TypeVar("T")


class InvalidBlobIdError(ValueError):
    """A blob id that is not 64 lowercase hex characters; the filesystem is never touched."""


class BlobMissing(LookupError):
    """No blob with this id is stored (never written, deleted, or purged)."""

    def __init__(self, sha256: str) -> None:
        super().__init__(sha256)
        self.sha256 = sha256


def validate_blob_id(sha256: str) -> str:
    if not isinstance(sha256, str) or _SHA256_HEX.fullmatch(sha256) is None:
        raise InvalidBlobIdError("a blob id is 64 lowercase hex characters")
    return sha256


class Blobs(Protocol):
    """What the file service needs of a blob store: the local directory (BlobStore) or S3
    (bot.services.s3_blobs.S3BlobStore)."""

    async def put(self, data: bytes) -> str: ...

    async def get(self, sha256: str) -> bytes: ...

    async def exists(self, sha256: str) -> bool: ...

    async def delete(self, sha256: str) -> bool: ...

    async def purge_older_than(self, age: timedelta) -> int: ...

    def local_file(self, sha256: str) -> Path | None:
        """The blob's file on this machine's disk; None for a store elsewhere (S3)."""
        ...


async def put_while(blobs: Blobs, data: bytes, work: Awaitable[T]) -> tuple[str, T]:
    """`work` (a provider call) while `data` is written to the blob store, so that neither waits
    for the other: the blob's sha256 and the work's result. The work is always awaited to its end
    (a paid call is never left running); a blob written for work that then failed is left to the
    blob retention."""
    stored = asyncio.create_task(blobs.put(data))
    try:
        result = await work
    except BaseException:
        await asyncio.wait([stored])
        if not stored.cancelled():
            stored.exception()  # retrieved: the work's failure is the one that counts
        raise
    return await stored, result


class BlobStore:
    """Stores bytes under their SHA-256 below ``root``."""

    def __init__(self, root: Path) -> None:
        self._root = root

    @property
    def root(self) -> Path:
        return self._root

    def path_for(self, sha256: str) -> Path:
        """Where a blob lives; raises InvalidBlobIdError for anything but a sha256 hex digest."""
        blob_id = validate_blob_id(sha256)
        return self._root / blob_id[:2] / blob_id[2:4] / blob_id

    def local_file(self, sha256: str) -> Path:
        return self.path_for(sha256)

    async def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256; storing the same bytes again is a no-op that
        refreshes the blob's age."""
        return await asyncio.to_thread(self._put, data)

    async def get(self, sha256: str) -> bytes:
        path = self.path_for(sha256)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise BlobMissing(sha256) from None

    async def exists(self, sha256: str) -> bool:
        return await asyncio.to_thread(self.path_for(sha256).is_file)

    async def delete(self, sha256: str) -> bool:
        """Remove a blob; False when it was not there."""
        path = self.path_for(sha256)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def purge_older_than(self, age: timedelta) -> int:
        """Delete blobs (and leftover temporary files) last written before now - ``age``;
        returns how many blobs were deleted."""
        if age < timedelta(0):
            raise ValueError("age must not be negative")
        cutoff = time.time() - age.total_seconds()
        purged = await asyncio.to_thread(self._purge_before, cutoff)
        log.info("blobs_purged", count=purged, older_than_days=age.days)
        return purged

    def _put(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha256)
        if _refresh_if_present(path):
            return sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, data)
        return sha256

    def _purge_before(self, cutoff: float) -> int:
        purged = 0
        if not self._root.is_dir():
            return purged
        for path in self._root.glob("??/??/*"):
            is_blob = _SHA256_HEX.fullmatch(path.name) is not None
            if not (is_blob or path.name.startswith(_TEMP_PREFIX)):
                continue
            if _unlink_if_older(path, cutoff) and is_blob:
                purged += 1
        return purged


def _refresh_if_present(path: Path) -> bool:
    """Touch an existing blob so a fresh reference keeps it from being purged."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=_TEMP_PREFIX)
    temp_path = Path(temp_name)
    try:
        with os.fdopen(descriptor, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        temp_path.chmod(0o644)
        temp_path.replace(path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _unlink_if_older(path: Path, cutoff: float) -> bool:
    try:
        if path.stat().st_mtime >= cutoff:
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True
