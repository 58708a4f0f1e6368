"""The real bot process with BLOB_STORE_URL=s3://...: a photo's original, and a generated image's,
lands in the bucket of a real S3-compatible server (moto's, on 127.0.0.1), not on the local
disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

from aiobotocore.session import get_session
from sqlalchemy import text

from bot.db.session import create_engine
from tests.e2e.conftest import StartBot
from tests.e2e.test_access_and_caps import png_bytes
from tests.e2e.test_chat import wait_update_finished
from tests.fakes.anthropic import FakeAnthropic, text_reply, tool_use_reply
from tests.fakes.gemini import FakeGemini, image_reply
from tests.fakes.telegram import FakeTelegram
from tests.integration.test_s3_blobs import (  # noqa: F401 (the fixture)
    BUCKET,
    KEY_ID,
    SECRET,
    _make_bucket,
    s3_endpoint,
)


async def test_the_bot_keeps_photos_in_s3(
    s3_endpoint: str,  # noqa: F811
    database_url: str,
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    tmp_path: Path,
) -> None:
    bucket = await start_on_s3(start_bot, s3_endpoint, f"{BUCKET}-e2e")
    anthropic_fake.script(text_reply("A green rectangle."))
    update = telegram.push_photo(93001, png_bytes(), caption="what is this?")
    [sha] = await finished_file_hashes(database_url, telegram, update, 93001)
    assert await bucket_keys(s3_endpoint, bucket) == [f"bot-files/{sha[:2]}/{sha[2:4]}/{sha}"]
    local = tmp_path / "data" / "files"
    assert not local.exists() or not [p for p in local.rglob("*") if p.is_file()]


async def test_a_generated_image_goes_to_s3_and_to_the_chat(
    s3_endpoint: str,  # noqa: F811
    database_url: str,
    start_bot: StartBot,
    telegram: FakeTelegram,
    anthropic_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    tmp_path: Path,
) -> None:
    # With blobs on S3 the original is stored while the chat receives it from memory.
    bucket = await start_on_s3(start_bot, s3_endpoint, f"{BUCKET}-e2e-generated")
    anthropic_fake.script(
        tool_use_reply("generate_image", {"prompt": "a castle", "image_size": "4K"}, id="toolu_s3"),
        text_reply("Done."),
    )
    gemini_fake.script(image_reply())
    update = telegram.push_text(93002, "draw a castle in 4K")
    [sha] = await finished_file_hashes(database_url, telegram, update, 93002)
    assert await bucket_keys(s3_endpoint, bucket) == [f"bot-files/{sha[:2]}/{sha[2:4]}/{sha}"]
    [document] = [s for s in telegram.sent(93002) if s.method == "sendDocument"]
    assert document.document is not None
    assert hashlib.sha256(document.document).hexdigest() == sha
    local = tmp_path / "data" / "files"
    assert not local.exists() or not [p for p in local.rglob("*") if p.is_file()]


async def start_on_s3(start_bot: StartBot, endpoint: str, bucket: str) -> str:
    """The bot started with its blobs in a new bucket of moto's S3 server; the bucket's name."""
    await _make_bucket(endpoint, bucket)
    await start_bot(
        BLOB_STORE_URL=f"s3://{bucket}/bot-files",
        S3_ENDPOINT_URL=endpoint,
        S3_ACCESS_KEY_ID=KEY_ID,
        S3_SECRET_ACCESS_KEY=SECRET,
    )
    return bucket


async def finished_file_hashes(
    database_url: str, telegram: FakeTelegram, update: int, user_id: int
) -> list[str]:
    """The sha256 of the user's files once the update is answered."""
    engine = create_engine(database_url)
    try:
        assert await wait_update_finished(telegram, engine, update, timeout=30) == "answered"
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT sha256 FROM user_files WHERE user_id = :u"), {"u": user_id}
            )
            return [str(r[0]) for r in rows]
    finally:
        await engine.dispose()


async def bucket_keys(endpoint: str, bucket: str) -> list[str]:
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    ) as client:
        listed = await client.list_objects_v2(Bucket=bucket, Prefix="bot-files/")
    return [item["Key"] for item in listed.get("Contents", [])]
