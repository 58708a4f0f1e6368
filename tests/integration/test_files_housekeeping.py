"""FileService lookups and housekeeping against real Postgres and the fake Files API."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.providers.anthropic import ClaudeGateway, create_anthropic_client
from bot.services.blobs import BlobStore
from bot.services.files import FilesConfig, FileService, parse_file_id
from bot.services.media import ImageLimits, ImageProcessor
from tests.fakes.anthropic import FakeAnthropic

USER = 9001
OTHER = 9002


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def files(
    sessionmaker: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    anthropic_fake: FakeAnthropic,
    tmp_path: Path,
) -> AsyncIterator[FileService]:
    async with engine.begin() as conn:
        for user in (USER, OTHER):
            await conn.execute(text("INSERT INTO users (id) VALUES (:id)"), {"id": user})
    client = create_anthropic_client("sk-ant-test", anthropic_fake.base_url, 10)
    service = FileService(
        sessionmaker=sessionmaker,
        claude=ClaudeGateway(client, max_retries=0),
        blobs=BlobStore(tmp_path / "files"),
        processor=ImageProcessor(ImageLimits.from_megabytes(20, 40_000_000)),
        config=FilesConfig(
            retention=timedelta(days=30),
            blob_retention=timedelta(days=90),
            image_model="gemini-3-pro-image",
        ),
    )
    yield service
    await client.close()


async def add_file(
    engine: AsyncEngine, user_id: int, claude_file_id: str | None, expires_at: datetime
) -> int:
    async with engine.begin() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "INSERT INTO user_files (user_id, source, kind, filename, mime_type, "
                        "size_bytes, sha256, claude_file_id, expires_at) VALUES (:u, 'user', "
                        "'photo', 'p.jpg', 'image/jpeg', 10, :sha, :cf, :exp) RETURNING id"
                    ),
                    {"u": user_id, "sha": "a" * 64, "cf": claude_file_id, "exp": expires_at},
                )
            ).scalar_one()
        )


async def deleted_at(engine: AsyncEngine, file_id: int) -> datetime | None:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT deleted_at FROM user_files WHERE id = :id"), {"id": file_id}
        )
    value: datetime | None = result.scalar_one()
    return value


async def test_expired_files_are_deleted_at_anthropic_and_marked(
    files: FileService, engine: AsyncEngine, anthropic_fake: FakeAnthropic
) -> None:
    now = datetime.now(UTC)
    old = anthropic_fake.add_file(b"old", "old.jpg", "image/jpeg")
    fresh = anthropic_fake.add_file(b"new", "new.jpg", "image/jpeg")
    stubborn = anthropic_fake.add_file(b"retry", "retry.jpg", "image/jpeg")
    old_id = await add_file(engine, USER, old.id, now - timedelta(minutes=1))
    fresh_id = await add_file(engine, USER, fresh.id, now + timedelta(days=1))
    stubborn_id = await add_file(engine, OTHER, stubborn.id, now - timedelta(minutes=1))
    gone_id = await add_file(engine, OTHER, "file_already_gone", now - timedelta(minutes=1))
    no_copy_id = await add_file(engine, USER, None, now - timedelta(minutes=1))
    anthropic_fake.fail_deletes(times=1, status=500)

    # The first delete fails (the oldest row is tried first): that row stays for the next run.
    expired = await files.expire_files()
    results = {i: await deleted_at(engine, i) for i in (old_id, fresh_id, stubborn_id, gone_id)}
    assert expired == 3
    assert results[old_id] is None and not old.deleted
    assert results[fresh_id] is None and not fresh.deleted
    assert results[stubborn_id] is not None and stubborn.deleted
    assert results[gone_id] is not None
    assert await deleted_at(engine, no_copy_id) is not None

    assert await files.expire_files() == 1
    assert old.deleted and await deleted_at(engine, old_id) is not None
    assert not fresh.deleted
    assert await files.expire_files() == 0


async def test_old_blobs_are_purged(files: FileService, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "files")
    old = await blobs.put(b"old image bytes")
    new = await blobs.put(b"new image bytes")
    long_ago = time.time() - timedelta(days=91).total_seconds()
    os.utime(blobs.path_for(old), (long_ago, long_ago))
    await files.housekeeping()
    assert not await blobs.exists(old)
    assert await blobs.exists(new)


async def test_resolve_is_scoped_to_the_user(files: FileService, engine: AsyncEngine) -> None:
    future = datetime.now(UTC) + timedelta(days=1)
    mine = await add_file(engine, USER, "file_mine", future)
    theirs = await add_file(engine, OTHER, "file_theirs", future)
    ref = await files.resolve(USER, str(mine))
    assert ref is not None and ref.id == mine and ref.claude_file_id == "file_mine"
    assert await files.resolve(USER, mine) is not None
    for raw in (str(theirs), theirs, "file_theirs", f"{theirs} ", "", "x", str(2**63), None):
        assert await files.resolve(USER, raw) is None, raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("12", 12),
        (12, 12),
        (" 12 ", 12),
        ("012", 12),
        ("0", None),
        ("-3", None),
        ("+3", None),
        ("1e3", None),
        ("12.0", None),
        ("١٢", None),
        (str(2**63 - 1), 2**63 - 1),
        (str(2**63), None),
        ("9" * 40, None),
        (True, None),
        (None, None),
        ("file_011abc", None),
    ],
)
def test_parse_file_id(raw: object, expected: int | None) -> None:
    assert parse_file_id(raw) == expected
