"""The Docker files: base images pinned by digest, one image built for `migrate` and `bot`, a
healthcheck, secrets kept out of the build context and out of environment variables."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness import PROJECT_ROOT

COMPOSE = (PROJECT_ROOT / "compose.yaml").read_text()
DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}\b")


def test_base_images_are_pinned_by_digest() -> None:
    [python_image] = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert python_image.startswith("python:3.11") and DIGEST.search(python_image)
    assert all(line.endswith("${PYTHON_IMAGE}") or " AS " in line for line in _from_lines())
    [postgres_image] = re.findall(r"image: (postgres\S*)", COMPOSE)
    assert DIGEST.search(postgres_image)


def _from_lines() -> list[str]:
    return [line for line in DOCKERFILE.splitlines() if line.startswith("FROM ")]


def test_one_image_is_built_for_migrate_and_bot_and_bot_has_a_healthcheck() -> None:
    assert COMPOSE.count("build:") == 1
    images = re.findall(r"image: (telegram-assistant-bot\S*)", COMPOSE)
    # migrate builds it; bot (and the replicas of the scale profile) run that same image.
    assert set(images) == {"telegram-assistant-bot:local"}
    assert len(images) >= 2
    bot = COMPOSE.split("\n  bot:\n", 1)[1].split("\nsecrets:", 1)[0]
    assert "healthcheck:" in bot and "bot.health" in bot
    assert "HEALTHCHECK" in DOCKERFILE


def test_the_database_password_is_a_secret_file_never_an_environment_variable() -> None:
    assert "DATABASE_URL: postgresql+asyncpg://bot@postgres:5432/bot" in COMPOSE
    assert "database_password" in COMPOSE
    assert "POSTGRES_PASSWORD_FILE: /run/secrets/database_password" in COMPOSE
    assert "cat /run/secrets" not in COMPOSE and "entrypoint" not in COMPOSE
    assert not re.search(r"POSTGRES_PASSWORD:|DATABASE_PASSWORD:", COMPOSE)


def test_the_build_context_leaves_out_secrets_data_and_caches() -> None:
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".venv", "data/", "secrets/*.txt", ".mypy_cache", ".pytest_cache", ".ruff_cache"):
        assert entry in ignored


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / "compose.yaml", tmp_path / "compose.yaml")
    (tmp_path / "secrets").mkdir()
    for name in ("telegram_bot_token", "anthropic_api_key", "google_api_key", "database_password"):
        (tmp_path / "secrets" / f"{name}.txt").write_text("not-a-real-secret\n")
    result = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
