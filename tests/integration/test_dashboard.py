"""The Grafana dashboard's SQL queries, run against the real migrated schema with a little data,
and the provisioning files' references to it (datasource uids, the metrics the bot exposes)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.ops.metrics import Metrics

OPS = Path(__file__).resolve().parents[2] / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "bot-costs.json"
TIME_FILTER = re.compile(r"\$__timeFilter\((\w+)\)")


def targets(datasource_type: str) -> list[tuple[str, dict[str, Any]]]:
    board = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target)
        for panel in board["panels"]
        for target in panel["targets"]
        if target["datasource"]["type"] == datasource_type
    ]


def as_postgres(raw_sql: str) -> str:
    """Grafana's $__timeFilter(column), expanded the way Grafana does for the last 30 days."""
    assert "$__" not in TIME_FILTER.sub("", raw_sql), "only $__timeFilter is expanded here"
    return TIME_FILTER.sub(
        r"\1 BETWEEN now() - interval '30 days' AND now() + interval '1 minute'", raw_sql
    )


async def seed(engine: AsyncEngine) -> None:
    statements = [
        "INSERT INTO users (id, username, balance_micros) VALUES (501, 'ann', 1000000), "
        "(502, 'bob', 0)",
        "INSERT INTO api_calls (user_id, provider, model, purpose, status, provider_cost_micros, "
        "charged_micros, image_count) VALUES "
        "(501, 'anthropic', 'claude-sonnet-5-5', 'chat', 'ok', 3000, 4500, 0), "
        "(501, 'google', 'gemini-3-pro-image', 'generate_image', 'ok', 134000, 201000, 1), "
        "(502, 'anthropic', 'claude-sonnet-5-5', 'chat', 'error', 0, 0, 0)",
        "INSERT INTO balance_operations (user_id, kind, amount_micros, balance_after_micros, "
        "idempotency_key) VALUES (501, 'starter', 500000, 500000, 's:501'), "
        "(501, 'purchase', 650000, 1150000, 'p:1'), (501, 'topup', 50000, 1200000, 't:1')",
    ]
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))


@pytest.mark.parametrize(
    ("title", "target"), targets("grafana-postgresql-datasource"), ids=lambda v: str(v)[:40]
)
async def test_dashboard_sql_runs_on_the_schema(
    engine: AsyncEngine, title: str, target: dict[str, Any]
) -> None:
    await seed(engine)
    async with engine.connect() as conn:
        result = (await conn.execute(text(as_postgres(target["rawSql"])))).mappings().all()
    assert result, f"{title}: no rows"
    if target["format"] == "time_series":
        assert "time" in result[0], title


async def test_dashboard_figures_match_the_books(engine: AsyncEngine) -> None:
    await seed(engine)
    figures: dict[str, Any] = {}
    async with engine.connect() as conn:
        for title, target in targets("grafana-postgresql-datasource"):
            if target["format"] == "table" and "LIMIT" not in target["rawSql"]:
                row = (await conn.execute(text(as_postgres(target["rawSql"])))).one()
                figures[title] = row[0]
    assert float(figures["Spend (provider cost)"]) == pytest.approx(0.137)
    assert float(figures["Charged to people"]) == pytest.approx(0.2055)
    assert float(figures["Margin"]) == pytest.approx(0.0685)
    assert float(figures["Income (Stars and top-ups, net of refunds)"]) == pytest.approx(0.7)
    assert figures["Images generated"] == 1
    assert figures["Active people"] == 2


def test_prometheus_panels_use_metrics_the_bot_exposes() -> None:
    exposed = {metric.name for metric in Metrics().registry.collect()}
    names = set()
    for _, target in targets("prometheus"):
        names |= set(re.findall(r"\b(bot_[a-z_]+)", target["expr"]))
    assert names
    for name in names:
        base = re.sub(r"_(bucket|total|count|sum)$", "", name)
        assert base in exposed, name


def test_provisioning_points_at_the_dashboard_and_datasources() -> None:
    sources = yaml.safe_load(
        (OPS / "grafana/provisioning/datasources/datasources.yaml").read_text()
    )
    uids = {source["uid"] for source in sources["datasources"]}
    board = json.loads(DASHBOARD.read_text())
    used = {t["datasource"]["uid"] for p in board["panels"] for t in p["targets"]}
    assert used <= uids
    scrape = yaml.safe_load((OPS / "prometheus/prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [
        "bot-1:9100",
        "bot-2:9100",
    ]


def test_compose_scale_profile_is_valid() -> None:
    """`docker-compose config` (Debian's docker-compose) parses and validates compose.yaml."""
    import shutil
    import subprocess

    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    root = OPS.parent
    result = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "--profile", "scale", "config"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in ("bot-1", "bot-2", "proxy", "prometheus", "grafana"):
        assert services[name]["profiles"] == ["scale"], name
    for name in ("bot-1", "bot-2"):
        env = services[name]["environment"]
        assert env["BOT_MODE"] == "webhook"
        assert env["METRICS_LISTEN"] == "0.0.0.0:9100"
        assert "webhook_secret" in [s["source"] for s in services[name]["secrets"]]
    assert "profiles" not in services["bot"]
