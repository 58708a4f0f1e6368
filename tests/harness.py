"""Runs the real `python -m bot` process against the fake servers, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# Obviously fake secrets with the real shapes, so the leak scan's patterns are exercised. The keys
# are assembled from parts so that secret scanners reading the source do not take them for real.
FAKE_BOT_TOKEN = "123456789:TEST-fake-telegram-token-not-real-000"
FAKE_ANTHROPIC_KEY = "sk-ant-" + "test-fake-anthropic-key-not-real-0000"
FAKE_GOOGLE_KEY = "AIza" + "TEST-fake-google-key-not-real-000000"
FAKE_OPENAI_KEY = "sk-" + "proj-TEST-fake-openai-key-not-real-00000000"


class PolledTelegram(Protocol):
    """What the fake Telegram offers for waiting on the bot's polls."""

    get_updates_times: list[float]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = ...) -> None: ...


class BotProcess:
    """One bot process; its log lines are kept for assertions and the secret-leak scan."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC", "GOOGLE", "GEMINI", "TELEGRAM", "OPENAI", "IMAGE_"))
        }
        env.update(self._env)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=str(PROJECT_ROOT),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=64 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())

    async def start_polling(self, telegram: PolledTelegram, timeout: float = 120.0) -> None:
        """Start the process and wait for its first getUpdates; exiting before it is an error.

        The wait ends as soon as the first poll arrives; the long limit only matters on a loaded
        machine, where importing the bot's dependencies alone can take tens of seconds."""
        polls_before = len(telegram.get_updates_times)
        await self.start()
        await telegram.wait_for(
            lambda: len(telegram.get_updates_times) > polls_before or self.returncode is not None,
            timeout=timeout,
        )
        if self.returncode is not None:
            raise AssertionError(
                f"bot exited early ({self.returncode}):\n{self.log_text()[-4000:]}"
            )

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            self.lines.append(line.decode("utf-8", "replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode if self._proc else None

    def log_text(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_log(self, needle: str, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while needle not in self.log_text():
            if self.returncode is not None:
                raise AssertionError(f"bot exited ({self.returncode}):\n{self.log_text()[-4000:]}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {needle!r} in bot log:\n{self.log_text()[-4000:]}")
            await asyncio.sleep(0.02)

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self._proc is None or self._proc.returncode is not None:
            return self.returncode or 0
        self._proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            self._proc.kill()
            code = await self._proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


def bot_env(
    *,
    database_url: str,
    data_dir: Path,
    telegram_url: str,
    anthropic_url: str,
    gemini_url: str,
    **overrides: str,
) -> dict[str, str]:
    env = {
        "TELEGRAM_BOT_TOKEN": FAKE_BOT_TOKEN,
        "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
        "GOOGLE_API_KEY": FAKE_GOOGLE_KEY,
        "SECRETS_DIR": str(data_dir / "no-secrets"),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "TELEGRAM_API_URL": telegram_url,
        "ANTHROPIC_BASE_URL": anthropic_url,
        "GEMINI_BASE_URL": gemini_url,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "POLLING_TIMEOUT_SECONDS": "5",
        "SHUTDOWN_GRACE_SECONDS": "5",
        "DRAFT_INTERVAL_SECONDS": "0.05",
        "GEMINI_RETRY_INITIAL_DELAY": "0.01",
        "OPENAI_RETRY_INITIAL_DELAY": "0.01",
        "MERGE_WINDOW_SECONDS": "0.3",
        "WEB_TOOLS": "off",  # tests of web tools turn them on
        "PYTHONUNBUFFERED": "1",
        # tests that count replies would see the low-balance notice; the tests of it set this
        "LOW_BALANCE_USD": "0",
        # likewise the Confirm / Cancel question before a 4K image
        "CONFIRM_ABOVE_USD": "1000",
    }
    env.update(overrides)
    return env


def run_fresh_python(code: str, *args: str, timeout: float = 180) -> str:
    """Runs `code` in a new interpreter (nothing imported yet); its stdout, failing on an error."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
