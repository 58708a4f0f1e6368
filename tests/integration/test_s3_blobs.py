"""The S3 blob store against a real S3-compatible server (moto's, on 127.0.0.1), and the local
directory's blobs read through it after the switch."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from moto.server import ThreadedMotoServer

from bot.services.blobs import BlobMissing, BlobStore, InvalidBlobIdError
from bot.services.s3_blobs import S3BlobStore, S3Credentials, S3Location
from tests.netutil import free_port

BUCKET = "bot-blobs"
KEY_ID = "test-s3-key-id"
SECRET = "test-s3-secret-not-real"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


async def _make_bucket(endpoint: str, name: str) -> None:
    session = get_session()
    async with session.create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    ) as client:
        await client.create_bucket(Bucket=name)


@pytest.fixture
async def store(s3_endpoint: str, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    bucket = f"{BUCKET}-{os.urandom(4).hex()}"
    await _make_bucket(s3_endpoint, bucket)
    blobs = S3BlobStore(
        S3Location.parse(f"s3://{bucket}/files"),
        S3Credentials(endpoint_url=s3_endpoint, access_key_id=KEY_ID, secret_access_key=SECRET),
        fallback=BlobStore(tmp_path / "files"),
    )
    await blobs.start()
    yield blobs
    await blobs.aclose()


def test_location_parses_bucket_prefix_and_region() -> None:
    assert S3Location.parse("s3://b/p/q") == S3Location("b", "p/q", "us-east-1")
    assert S3Location.parse("s3://b?region=eu-west-1") == S3Location("b", "", "eu-west-1")
    with pytest.raises(ValueError, match="s3://"):
        S3Location.parse("/var/files")


async def test_put_get_exists_delete_round_trip(store: S3BlobStore) -> None:
    data = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    sha = await store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.key_for(sha) == f"files/{sha[:2]}/{sha[2:4]}/{sha}"
    assert await store.get(sha) == data
    assert await store.exists(sha)
    assert await store.put(data) == sha  # same bytes, same blob
    assert await store.delete(sha)
    assert not await store.exists(sha)
    assert not await store.delete(sha)
    with pytest.raises(BlobMissing):
        await store.get(sha)


async def test_invalid_ids_never_reach_the_server(store: S3BlobStore) -> None:
    with pytest.raises(InvalidBlobIdError):
        await store.get("../../etc/passwd")


async def test_purge_deletes_only_blobs_older_than_the_cutoff(store: S3BlobStore) -> None:
    kept = await store.put(b"fresh")
    assert await store.purge_older_than(timedelta(days=1)) == 0
    assert await store.exists(kept)
    # Age zero: everything written before now goes.
    assert await store.purge_older_than(timedelta(0)) == 1
    assert not await store.exists(kept)
    with pytest.raises(ValueError, match="negative"):
        await store.purge_older_than(timedelta(seconds=-1))


async def test_blobs_stored_locally_before_the_switch_keep_working(
    store: S3BlobStore, tmp_path: Path
) -> None:
    local = BlobStore(tmp_path / "files")
    data = b"an image stored on disk last month"
    sha = await local.put(data)
    assert await store.exists(sha)
    assert await store.get(sha) == data
    # The first read copied it into S3: it stays readable once the local copy is gone.
    assert await local.delete(sha)
    assert await store.get(sha) == data
