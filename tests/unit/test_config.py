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
    assert settings.IMAGE_PROVIDER == "google"
    assert settings.IMAGE_MODEL == "gemini-3-pro-image"
    assert settings.TRANSCRIBE_MODEL == "gemini-3.5-flash"
    assert settings.chat_models == ["claude-sonnet-5-5"]
    assert settings.STAR_VALUE_USD == Decimal("0.013")
    assert settings.STAR_PACKAGES == [50, 100, 250, 500, 1000]
    assert settings.REFUND_WINDOW_DAYS == 21
    assert settings.LOW_BALANCE_USD == Decimal("0.20")
    assert settings.CONFIRM_ABOVE_USD == Decimal("0.20")
    assert (settings.WEB_TOOLS, settings.GROUPS, settings.BOT_MODE) == ("on", "mention", "polling")
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


def test_image_model_follows_the_provider(clean_env: dict[str, str]) -> None:
    saved = dict(os.environ)
    try:
        _with_env(
            {**clean_env, **SECRET_ENV, "IMAGE_PROVIDER": "openai", "OPENAI_API_KEY": "sk-test"}
        )
        openai = load_settings()
        _with_env({**clean_env, **SECRET_ENV, "IMAGE_MODEL": "gemini-3.1-flash-image"})
        chosen = load_settings()
    finally:
        _with_env(saved)
    assert openai.IMAGE_MODEL == "gpt-image-2.6-sunburst"
    assert chosen.IMAGE_MODEL == "gemini-3.1-flash-image"


def test_openai_key_is_required_only_with_the_openai_provider(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=PROJECT_ROOT,
        env={**clean_env, **SECRET_ENV, "IMAGE_PROVIDER": "openai"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Missing secret OPENAI_API_KEY: put it in the file ")
    assert "openai_api_key" in line
    assert "IMAGE_PROVIDER=openai" in line
    saved = dict(os.environ)
    try:
        _with_env({**clean_env, **SECRET_ENV})
        google = load_settings()
        secrets = tmp_path / "secrets"
        secrets.mkdir(exist_ok=True)
        (secrets / "openai_api_key.txt").write_text("sk-from-file\n")
        _with_env({**clean_env, **SECRET_ENV, "IMAGE_PROVIDER": "openai"})
        from_file = load_settings()
    finally:
        _with_env(saved)
    assert google.OPENAI_API_KEY is None
    assert from_file.OPENAI_API_KEY is not None
    assert from_file.OPENAI_API_KEY.get_secret_value() == "sk-from-file"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"IMAGE_MODEL": "gemini-3-pro-image-preview"},
            ["'gemini-3-pro-image-preview' (IMAGE_MODEL)", "PRICES_FILE"],
        ),
        ({"CLAUDE_MODEL": "claude-typo-9"}, ["'claude-typo-9' (CLAUDE_MODEL)", "PRICES_FILE"]),
        ({"PRICES_FILE": "/nonexistent/prices.toml"}, ["PRICES_FILE", "cannot be read"]),
    ],
)
def test_an_unpriced_model_stops_start_up_with_one_line(
    clean_env: dict[str, str], env: dict[str, str], words: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=PROJECT_ROOT,
        env={
            **clean_env,
            **SECRET_ENV,
            "DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1:9/x",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    for word in words:
        assert word in line


def test_chat_models_always_include_the_default(clean_env: dict[str, str]) -> None:
    saved = dict(os.environ)
    try:
        _with_env({**clean_env, **SECRET_ENV, "CHAT_MODELS": "claude-haiku-5-5, claude-opus-5-5"})
        settings = load_settings()
    finally:
        _with_env(saved)
    assert settings.chat_models == ["claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5-5"]


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
