"""The PDF checker's child process: one process serves PDF after PDF; a bomb that runs past its
deadline, a crash or a cancelled check costs that process, never the next person's PDF; and
closing the checker leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.services.documents import MAX_PDF_BYTES, DocumentRejected, check_pdf
from bot.services.pdf_worker import PdfChecker, PdfCheckerLimits
from tests.media_samples import (
    encrypted_pdf,
    nested_pdf_bomb,
    page_count_bomb,
    pdf,
    slow_pdf,
    zero_page_pdf,
)

SHORT_DEADLINE = PdfCheckerLimits(check_seconds=0.25)


@pytest.fixture
async def checker() -> AsyncIterator[PdfChecker]:
    checker = PdfChecker()
    yield checker
    await checker.aclose()


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def rejection(data: bytes, checker: PdfChecker) -> str:
    with pytest.raises(DocumentRejected) as caught:
        await check_pdf(data, checker)
    return caught.value.reason


async def test_readable_pdfs_and_the_size_limit(checker: PdfChecker) -> None:
    assert (await check_pdf(pdf(3), checker)).pages == 3
    assert (await check_pdf(pdf(100), checker)).pages == 100
    assert await rejection(b"%PDF-" + bytes(MAX_PDF_BYTES), checker) == "too_large"
    assert await rejection(b"PK\x03\x04 a zip named pdf", checker) == "pdf_corrupt"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encrypted_pdf(), "pdf_encrypted"),
        (nested_pdf_bomb(), "pdf_too_complex"),
        (page_count_bomb(), "pdf_too_many_pages"),
        (zero_page_pdf(), "pdf_empty"),
        (b"%PDF-1.7\n garbage without objects", "pdf_corrupt"),
        (pdf(3)[: len(pdf(3)) // 3], "pdf_corrupt"),
    ],
)
async def test_the_child_process_refuses_hostile_pdfs(
    checker: PdfChecker, data: bytes, reason: str
) -> None:
    assert await rejection(data, checker) == reason
    assert (await check_pdf(pdf(2), checker)).pages == 2  # and is ready for the next one


async def test_one_process_checks_pdf_after_pdf(checker: PdfChecker) -> None:
    await checker.start()
    pid = checker.pid
    assert pid is not None and alive(pid)
    assert (await check_pdf(pdf(1), checker)).pages == 1
    assert await rejection(encrypted_pdf(), checker) == "pdf_encrypted"
    assert (await check_pdf(pdf(4), checker)).pages == 4
    assert checker.pid == pid


async def test_concurrent_pdfs_queue_for_the_one_process(checker: PdfChecker) -> None:
    pages = await asyncio.gather(*(check_pdf(pdf(n), checker) for n in range(1, 7)))
    assert [p.pages for p in pages] == [1, 2, 3, 4, 5, 6]
    assert checker.pid is not None


async def test_a_bomb_past_its_deadline_kills_the_process_and_the_next_pdf_is_read() -> None:
    checker = PdfChecker(SHORT_DEADLINE)
    try:
        assert (await check_pdf(pdf(1), checker)).pages == 1
        first = checker.pid
        assert first is not None
        assert await rejection(slow_pdf(), checker) == "pdf_too_complex"
        assert not alive(first)
        assert checker.pid is None
        assert (await check_pdf(pdf(2), checker)).pages == 2
        assert checker.pid not in (None, first)
    finally:
        await checker.aclose()


async def test_a_refused_bomb_retires_the_process(checker: PdfChecker) -> None:
    await checker.start()
    first = checker.pid
    assert first is not None
    assert await rejection(nested_pdf_bomb(), checker) == "pdf_too_complex"
    assert not alive(first)
    assert (await check_pdf(pdf(2), checker)).pages == 2
    assert checker.pid not in (None, first)


async def test_a_process_killed_between_pdfs_is_replaced_without_refusing_one(
    checker: PdfChecker,
) -> None:
    await checker.start()
    first = checker.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    for _ in range(200):
        if not alive(first):
            break
        await asyncio.sleep(0.01)
    assert (await check_pdf(pdf(3), checker)).pages == 3
    assert checker.pid not in (None, first)


async def test_a_cancelled_check_kills_the_process(checker: PdfChecker) -> None:
    await checker.start()
    first = checker.pid
    assert first is not None
    task = asyncio.create_task(check_pdf(slow_pdf(), checker))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(first)
    assert (await check_pdf(pdf(1), checker)).pages == 1


async def test_closing_leaves_no_process_and_refuses_later_pdfs() -> None:
    checker = PdfChecker()
    await checker.start()
    pid = checker.pid
    assert pid is not None and alive(pid)
    await checker.aclose()
    assert not alive(pid)
    assert await rejection(pdf(1), checker) == "pdf_too_complex"
    assert checker.pid is None


async def test_an_idle_checker_exits_and_the_next_pdf_starts_one() -> None:
    checker = PdfChecker(PdfCheckerLimits(idle_seconds=0.3))
    try:
        assert (await check_pdf(pdf(1), checker)).pages == 1
        first = checker.pid
        assert first is not None
        for _ in range(50):
            if checker.pid is None and not alive(first):
                break
            await asyncio.sleep(0.1)
        assert checker.pid is None
        assert not alive(first)
        assert (await check_pdf(pdf(2), checker)).pages == 2
        assert checker.pid not in (None, first)
    finally:
        await checker.aclose()


async def test_the_checker_starts_without_the_bots_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PDF that subverted the checker would find no token or key in its environment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "FAKE-ANTHROPIC-KEY-for-this-test")
    checker = PdfChecker()
    try:
        await checker.start()
        assert checker.pid is not None
        environ = Path(f"/proc/{checker.pid}/environ").read_bytes()
    finally:
        await checker.aclose()
    assert b"FAKE-ANTHROPIC-KEY-for-this-test" not in environ
    assert b"PATH=" in environ
