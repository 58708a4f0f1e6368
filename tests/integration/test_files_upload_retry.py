"""Files API uploads survive one transient failure and give up after the retry."""

from __future__ import annotations

import anthropic
import pytest

from bot.providers.anthropic import ClaudeGateway, create_anthropic_client
from tests.fakes.anthropic import FakeAnthropic
from tests.harness import FAKE_ANTHROPIC_KEY


async def test_one_failed_upload_is_retried() -> None:
    async with FakeAnthropic() as fake:
        client = create_anthropic_client(FAKE_ANTHROPIC_KEY, fake.base_url, timeout=10)
        try:
            gateway = ClaudeGateway(client, max_retries=0)
            fake.fail_uploads(times=1, status=503)
            uploaded = await gateway.upload_file("a.png", b"\x89PNG-bytes", "image/png")
            fake.fail_uploads(times=2, status=500)
            with pytest.raises(anthropic.InternalServerError):
                await gateway.upload_file("b.png", b"\x89PNG-other", "image/png")
            fake.fail_uploads(times=1, status=400)
            with pytest.raises(anthropic.BadRequestError):
                await gateway.upload_file("c.png", b"\x89PNG-third", "image/png")
        finally:
            await client.close()
    uploads = [r for r in fake.requests if r.path == "/v1/files"]
    assert len(uploads) == 2 + 2 + 1  # retried once; retried once then gave up; not retried
    assert uploaded.file_id in fake.files
