# syntax=docker/dockerfile:1.7
# The base image is pinned by digest, so a rebuild gets the same bytes. This digest of
# `python:3.11-slim-bookworm` is as recorded in public repositories; it could not be checked against
# Docker Hub from the development machines (no Docker engine). Check and refresh it with
# `docker buildx imagetools inspect python:3.11-slim-bookworm` (or let Renovate/Dependabot do it);
# a wrong digest fails the pull, it never pulls something else.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --locked --no-dev --no-install-project
COPY bot ./bot
COPY migrations ./migrations
COPY alembic.ini ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --locked --no-dev

FROM ${PYTHON_IMAGE}
RUN groupadd --system bot && useradd --system --gid bot --home-dir /app bot \
    && mkdir -p /data && chown bot:bot /data
WORKDIR /app
COPY --from=build --chown=bot:bot /app /app
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    SECRETS_DIR=/run/secrets \
    DATA_DIR=/data \
    LOG_FORMAT=json
USER bot
STOPSIGNAL SIGTERM
# The poll loop touches /data/heartbeat at least once a long poll; `bot.health` checks its age.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot.health"]
CMD ["python", "-m", "bot"]
