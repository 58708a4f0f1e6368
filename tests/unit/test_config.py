"""Settings: secrets from files or the environment, defaults, and the one-line missing-secret error."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from bot.config import ConfigurationError, load_settings
from tests.harness import FAKE_ANTHROPIC_KEY, FAKE_BOT_TOKEN, FAKE_GOOGLE_KEY, PROJECT_ROOT

SECRET_ENV = {
    "TELEGRAM_BOT_TOKEN": FAKE_BOT_TOKEN,
    "ANTHROPIC_API_KEY": FAKE_ANTHROPIC_KEY,
    "GOOGLE_API_KEY": FAKE_GOOGLE_KEY,
}


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV and k != "DATABASE_URL"}
    env["SECRETS_DIR"] = str(tmp_path / "secrets")
    return env


def _with_env(env: dict[str, str]) -> None:
    os.environ.clear()
    os.environ.update(env)


def test_defaults_match_the_design(clean_env: dict[str, str]) -> None:
    saved = dict(os.environ)
    try:
        _with_env({**clean_env, **SECRET_ENV})
        settings = load_settings()
    finally:
        _with_env(saved)
    assert settings.CLAUDE_MODEL == "claude-sonnet-5-5"
    assert settings.vision_model == "claude-sonnet-5-5"
    assert settings.IMAGE_MODEL == "gemini-3-pro-image-preview"
    assert settings.STARTER_BALANCE_USD == Decimal("0.50")
    assert settings.starter_balance_micros == 500_000
    assert settings.PRICE_MARKUP == Decimal("1.0")
    assert settings.DATABASE_URL is None
    assert settings.DATA_DIR == Path("data")
    assert settings.ADMIN_USER_IDS == []
    assert settings.ALLOWED_USER_IDS == []
    assert settings.TELEGRAM_BOT_TOKEN.get_secret_value() == FAKE_BOT_TOKEN
    assert FAKE_BOT_TOKEN not in repr(settings)


def test_secrets_are_read_from_files_with_or_without_txt(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "telegram_bot_token").write_text(FAKE_BOT_TOKEN + "\n")
    (secrets / "anthropic_api_key.txt").write_text(FAKE_ANTHROPIC_KEY)
    (secrets / "google_api_key.txt").write_text(FAKE_GOOGLE_KEY)
    saved = dict(os.environ)
    try:
        _with_env({**clean_env, "ADMIN_USER_IDS": "1, 2,3", "VISION_MODEL": "claude-haiku-4-5"})
        settings = load_settings()
        _with_env({**clean_env, "GOOGLE_API_KEY": "fake-google-key-from-the-environment"})
        env_wins = load_settings()
    finally:
        _with_env(saved)
    assert settings.TELEGRAM_BOT_TOKEN.get_secret_value() == FAKE_BOT_TOKEN
    assert settings.ANTHROPIC_API_KEY.get_secret_value() == FAKE_ANTHROPIC_KEY
    assert settings.ADMIN_USER_IDS == [1, 2, 3]
    assert settings.vision_model == "claude-haiku-4-5"
    assert env_wins.GOOGLE_API_KEY.get_secret_value() == "fake-google-key-from-the-environment"


def test_missing_secret_is_described_in_one_line(clean_env: dict[str, str]) -> None:
    saved = dict(os.environ)
    try:
        _with_env({**clean_env, "TELEGRAM_BOT_TOKEN": FAKE_BOT_TOKEN})
        with pytest.raises(ConfigurationError) as caught:
            load_settings()
    finally:
        _with_env(saved)
    message = str(caught.value)
    assert "\n" not in message
    assert "ANTHROPIC_API_KEY" in message
    assert "anthropic_api_key" in message and "environment variable" in message


def test_bot_without_secrets_exits_with_one_clear_line(clean_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=PROJECT_ROOT,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    # Every missing secret at once, so one run tells the operator all there is to do.
    assert lines[0].startswith(
        "Missing secrets TELEGRAM_BOT_TOKEN, ANTHROPIC_API_KEY, GOOGLE_API_KEY"
    )
    assert "environment variable" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_setting_is_one_line_too(clean_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=PROJECT_ROOT,
        env={**clean_env, **SECRET_ENV, "PRICE_MARKUP": "cheap"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("Invalid setting PRICE_MARKUP")
    assert len(result.stderr.strip().splitlines()) == 1


def test_database_password_comes_from_its_secret_file_and_is_escaped(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    password = "p@ss/w:rd%?#"
    (secrets / "database_password.txt").write_text(password + "\n")
    saved = dict(os.environ)
    try:
        _with_env(
            {
                **clean_env,
                **SECRET_ENV,
                "DATABASE_URL": "postgresql+asyncpg://bot@postgres:5432/bot",
            }
        )
        settings = load_settings()
    finally:
        _with_env(saved)
    url = settings.database_url()
    assert url is not None
    assert url.password == password
    assert (url.username, url.host, url.port, url.database) == ("bot", "postgres", 5432, "bot")
    from sqlalchemy.engine import make_url

    assert make_url(url.render_as_string(hide_password=False)).password == password
    assert password not in repr(settings)
