"""The content-addressed blob store on a real temporary directory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bot.services.blobs import BlobMissing, BlobStore, InvalidBlobIdError

DAY = 24 * 3600


def age_file(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def stored_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file())


async def test_put_then_get_round_trips(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(1000)
    sha = await store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert await store.get(sha) == data
    assert await store.exists(sha)


async def test_blob_lives_under_two_levels_of_its_hash(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = await store.put(b"hello")
    expected = tmp_path / sha[:2] / sha[2:4] / sha
    assert store.path_for(sha) == expected
    assert stored_files(tmp_path) == [expected]
    assert expected.read_bytes() == b"hello"


async def test_put_is_idempotent_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(4096)
    first = await store.put(data)
    second = await store.put(data)
    concurrent = await asyncio.gather(*(store.put(data) for _ in range(20)))
    assert first == second
    assert set(concurrent) == {first}
    assert stored_files(tmp_path) == [store.path_for(first)]


async def test_storing_again_refreshes_the_age(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = await store.put(b"kept alive")
    age_file(store.path_for(sha), 10 * DAY)
    await store.put(b"kept alive")
    assert await store.purge_older_than(timedelta(days=1)) == 0
    assert await store.exists(sha)


async def test_empty_blob_is_fine(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = await store.put(b"")
    assert await store.get(sha) == b""


async def test_missing_blob_raises_blob_missing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = hashlib.sha256(b"never stored").hexdigest()
    with pytest.raises(BlobMissing) as caught:
        await store.get(sha)
    assert caught.value.sha256 == sha
    assert not await store.exists(sha)


async def test_delete_removes_once(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = await store.put(b"to delete")
    assert await store.delete(sha) is True
    assert await store.delete(sha) is False
    with pytest.raises(BlobMissing):
        await store.get(sha)


BAD_IDS = [
    "../../etc/passwd",
    "../" + "a" * 61,
    "/etc/passwd",
    "A" * 64,
    "a" * 63,
    "a" * 65,
    "g" * 64,
    "a" * 63 + "/",
    "a" * 63 + "\n",
    "a" * 64 + "\n",
    "",
    "ab/cd/" + "a" * 58,
    "a" * 32 + ".." + "a" * 30,
]


@pytest.mark.parametrize("bad_id", BAD_IDS)
async def test_anything_but_a_sha256_is_refused_before_touching_disk(
    tmp_path: Path, bad_id: str
) -> None:
    root = tmp_path / "blobs"
    store = BlobStore(root)
    with pytest.raises(InvalidBlobIdError):
        await store.get(bad_id)
    with pytest.raises(InvalidBlobIdError):
        await store.exists(bad_id)
    with pytest.raises(InvalidBlobIdError):
        await store.delete(bad_id)
    with pytest.raises(InvalidBlobIdError):
        store.path_for(bad_id)
    assert not root.exists()


async def test_traversal_cannot_read_a_file_outside_the_root(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    store = BlobStore(tmp_path / "blobs")
    with pytest.raises(InvalidBlobIdError):
        await store.get("../secret.txt")
    assert secret.read_text() == "token"


async def test_purge_deletes_only_old_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    old = await store.put(b"old")
    fresh = await store.put(b"fresh")
    age_file(store.path_for(old), 91 * DAY)
    age_file(store.path_for(fresh), 89 * DAY)
    assert await store.purge_older_than(timedelta(days=90)) == 1
    assert not await store.exists(old)
    assert await store.exists(fresh)
    assert await store.purge_older_than(timedelta(days=90)) == 0


async def test_purge_cleans_stale_temporary_files_and_ignores_strangers(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = await store.put(b"blob")
    directory = store.path_for(sha).parent
    stale_temp = directory / ".tmp-crashed"
    stale_temp.write_bytes(b"half")
    stranger = directory / "README"
    stranger.write_text("not a blob")
    for path in (stale_temp, stranger, store.path_for(sha)):
        age_file(path, 5 * DAY)
    assert await store.purge_older_than(timedelta(days=1)) == 1
    assert not stale_temp.exists()
    assert stranger.exists()


async def test_purge_on_a_missing_root_is_zero(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "not-yet")
    assert await store.purge_older_than(timedelta(days=1)) == 0


async def test_purge_rejects_negative_age(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="negative"):
        await BlobStore(tmp_path).purge_older_than(timedelta(days=-1))
