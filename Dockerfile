# syntax=docker/dockerfile:1.7
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --locked --no-dev --no-install-project
COPY bot ./bot
COPY migrations ./migrations
COPY alembic.ini ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --locked --no-dev

FROM python:3.11-slim
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
CMD ["python", "-m", "bot"]
