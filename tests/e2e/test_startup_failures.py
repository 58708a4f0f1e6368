"""Start-up failures through the real process: one clear line, a non-zero exit, no traceback, the
embedded Postgres stopped; signals honoured while start-up waits; a quiet start."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.fakes.telegram import FakeTelegram
from tests.harness import BotProcess, bot_env

CLOSED_PORT_URL = "http://127.0.0.1:9"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A data directory pgserver's own user can reach when the tests run as root (pytest's
    tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="bot-e2e-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(database_url: str, tmp_path: Path, telegram_url: str, **overrides: str) -> dict[str, str]:
    return bot_env(
        database_url=database_url,
        data_dir=tmp_path / "data",
        telegram_url=telegram_url,
        anthropic_url="http://127.0.0.1:9",
        gemini_url="http://127.0.0.1:9",
        **overrides,
    )


async def _run_to_exit(env: dict[str, str], timeout: float = 60.0) -> tuple[int, list[str], float]:
    process = BotProcess(env)
    began = time.monotonic()
    await process.start()
    code = await _wait_exit(process, timeout)
    return code, process.lines, time.monotonic() - began


async def _wait_exit(process: BotProcess, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while process.returncode is None:
        assert time.monotonic() < deadline, process.log_text()[-3000:]
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # the reader catches the last lines
    return process.returncode


def _plain_lines(lines: list[str]) -> list[str]:
    """Lines that are not the bot's JSON log records: what an operator reads as the verdict."""
    plain = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            plain.append(line)
    return plain


def _at(record: dict[str, str]) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


def _assert_one_line(lines: list[str], *needles: str) -> str:
    text = "\n".join(lines)
    assert "Traceback" not in text, text[-3000:]
    plain = _plain_lines(lines)
    assert len(plain) == 1, text[-3000:]
    for needle in needles:
        assert needle in plain[0], plain[0]
    return plain[0]


async def test_unreachable_telegram_is_one_line_and_the_embedded_postgres_stops(
    open_dir: Path,
) -> None:
    tmp_path = open_dir
    env = _env("", tmp_path, CLOSED_PORT_URL)
    env.pop("DATABASE_URL")
    code, lines, took = await _run_to_exit(env)
    assert code == 1
    line = _assert_one_line(lines, "Cannot reach Telegram", CLOSED_PORT_URL, "check")
    records = [json.loads(x) for x in lines if x not in _plain_lines(lines)]
    # Retries stop after the 10 s of patience (read from the bot's own clock, not the test's, so a
    # busy machine cannot make this fail), and the whole run ends soon after.
    retries = [_at(r) for r in records if r["event"] == "telegram_unreachable"]
    assert retries and retries[-1] - retries[0] <= 10.5, retries
    assert took < 90, took
    assert any(r["event"] == "embedded_postgres_stopped" for r in records), line
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()
    # A quiet start: the bot's own records only; pgserver's and alembic's chatter is debug.
    assert all(r.get("logger", "").startswith("bot.") for r in records), [
        r for r in records if not r.get("logger", "").startswith("bot.")
    ]
    assert "RuntimeDirWarning" not in "\n".join(lines)


async def test_unresolvable_telegram_host_is_one_line(database_url: str, tmp_path: Path) -> None:
    url = "http://telegram-host-that-does-not-exist.invalid"
    code, lines, _ = await _run_to_exit(_env(database_url, tmp_path, url))
    assert code == 1
    _assert_one_line(lines, "Cannot reach Telegram", url, "DNS")


async def test_rejected_token_names_where_it_came_from(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "telegram_bot_token.txt").write_text("987654321:TEST-revoked-token-not-real-0000\n")
    env = _env(database_url, tmp_path, telegram.base_url, SECRETS_DIR=str(secrets))
    env.pop("TELEGRAM_BOT_TOKEN")
    code, lines, took = await _run_to_exit(env)
    assert code == 1
    _assert_one_line(lines, "rejected the bot token", str(secrets / "telegram_bot_token.txt"))
    assert "telegram_unreachable" not in "\n".join(lines)  # a rejected token is not retried
    assert took < 90, took


async def test_get_me_in_a_shape_that_is_not_telegrams_is_one_line(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    # What the npm emulator telegram-test-api 4.2.1 answers: a User without `is_bot`.
    foreign = '{"ok":true,"result":{"username":"TestNameBot","first_name":"Test","id":666}}'
    telegram.fail_raw("getMe", status=200, body=foreign)
    code, lines, _ = await _run_to_exit(_env(database_url, tmp_path, telegram.base_url))
    assert code == 1
    line = _assert_one_line(lines, "getMe", telegram.base_url, "TELEGRAM_API_URL")
    assert "Telegram server says" not in line, line


async def test_a_metrics_address_in_use_is_one_line(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(database_url, tmp_path, telegram.base_url, METRICS_LISTEN=f"127.0.0.1:{port}")
        code, lines, _ = await _run_to_exit(env)
    assert code == 1
    _assert_one_line(lines, "METRICS_LISTEN", f"127.0.0.1:{port}", "Cannot listen")


async def test_malformed_token_is_one_line_before_anything_starts(
    database_url: str, tmp_path: Path, telegram: FakeTelegram
) -> None:
    env = _env(database_url, tmp_path, telegram.base_url, TELEGRAM_BOT_TOKEN="not a token")
    code, lines, _ = await _run_to_exit(env)
    assert code == 2
    _assert_one_line(lines, "TELEGRAM_BOT_TOKEN", "the environment variable TELEGRAM_BOT_TOKEN")
    assert not telegram.requests


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_while_get_me_hangs_stops_at_once(
    database_url: str, tmp_path: Path, telegram: FakeTelegram, sig: int
) -> None:
    telegram.hang("getMe")
    process = BotProcess(_env(database_url, tmp_path, telegram.base_url))
    await process.start()
    await telegram.wait_for(lambda: bool(telegram.calls("getMe")), timeout=120)
    began = time.monotonic()
    code = await process.stop(sig, timeout=10)
    # Without the signal honoured the bot would wait out getMe's 10 s of patience; under 8 s
    # tells the two apart even on a busy machine (idle, it stops in well under a second).
    assert time.monotonic() - began < 8, process.log_text()[-3000:]
    assert code == 0, process.log_text()[-3000:]
    assert "startup_interrupted" in process.log_text()
    assert "Traceback" not in process.log_text()


async def test_signal_while_the_embedded_postgres_starts_leaves_no_server(
    open_dir: Path,
) -> None:
    tmp_path = open_dir
    env = _env("", tmp_path, CLOSED_PORT_URL)
    env.pop("DATABASE_URL")
    process = BotProcess(env)
    await process.start()
    # The cluster's directory appears once the bot has imported, taken the signals over and
    # begun the embedded start (initdb under way).
    deadline = time.monotonic() + 120
    while not (tmp_path / "data" / "postgres").exists():
        assert process.returncode is None, process.log_text()[-3000:]
        assert time.monotonic() < deadline, process.log_text()[-3000:]
        await asyncio.sleep(0.02)
    code = await process.stop(signal.SIGINT, timeout=20)
    assert code == 0, process.log_text()[-3000:]
    assert "Traceback" not in process.log_text()
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists()
