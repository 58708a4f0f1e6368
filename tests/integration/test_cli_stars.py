"""`python -m bot admin stars-reconcile` and the income part of `admin report`, run as an operator
runs them (a subprocess) on the real database, with the fake Telegram as the Bot API."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.fakes.telegram import FakeTelegram
from tests.harness import FAKE_BOT_TOKEN, PROJECT_ROOT
from tests.integration.test_cli import Result, add_call, add_user, fetch


async def run_cli(env_extra: dict[str, str], tmp_path: Path, *args: str) -> Result:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC", "GOOGLE", "GEMINI", "TELEGRAM", "DATABASE"))
    }
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        SECRETS_DIR=str(tmp_path / "no-secrets"),
        PYTHONUNBUFFERED="1",
        **env_extra,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=str(PROJECT_ROOT),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


async def test_stars_reconcile_credits_missing_payments_and_outside_refunds(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    async with FakeTelegram(token=FAKE_BOT_TOKEN) as telegram:
        lost = telegram.push_successful_payment(42, 100, "stars:42:100:abc", deliver=False)
        other = telegram.push_successful_payment(43, 50, "stars:43:50:def", deliver=False)
        telegram.refund_outside(other)
        env = {
            "DATABASE_URL": database_url,
            "TELEGRAM_BOT_TOKEN": FAKE_BOT_TOKEN,
            "TELEGRAM_API_URL": telegram.base_url,
        }

        result = await run_cli(env, tmp_path, "admin", "stars-reconcile")
        again = await run_cli(env, tmp_path, "admin", "stars-reconcile")

    assert result.code == 0, result.stderr
    assert "Checked 3 Star transaction(s): credited 2 missing payment(s), recorded 1 refund(s)" in (
        result.stdout
    )
    assert "credited 0 missing payment(s), recorded 0 refund(s)" in again.stdout
    assert await fetch(
        engine, "SELECT telegram_payment_charge_id, status FROM payments ORDER BY id"
    ) == [(lost, "paid"), (other, "refunded")]
    assert await fetch(engine, "SELECT id, balance_micros FROM users ORDER BY id") == [
        (42, 1_300_000),
        (43, 0),
    ]
    assert await fetch(engine, "SELECT * FROM admin_balance_mismatches") == []


async def test_stars_reconcile_without_a_token_says_what_is_missing(
    database_url: str, tmp_path: Path
) -> None:
    result = await run_cli({"DATABASE_URL": database_url}, tmp_path, "admin", "stars-reconcile")
    assert result.code == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr


async def test_report_shows_stars_income_provider_cost_and_margin_per_day(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await add_user(engine, 42, "ann")
    await add_call(engine, 42, "chat", provider_cost=10_000, charged=12_000)
    async with engine.begin() as conn:
        for charge, stars, status in (("a", 100, "paid"), ("b", 50, "refunded")):
            await conn.execute(
                text(
                    "INSERT INTO payments (user_id, telegram_payment_charge_id, stars,"
                    " credited_micros, status, refunded_at)"
                    " VALUES (42, :c, :s, :s * 13000, CAST(:st AS varchar), CASE WHEN CAST(:st AS varchar) = 'refunded'"
                    " THEN now() END)"
                ),
                {"c": charge, "s": stars, "st": status},
            )
            await conn.execute(
                text(
                    "INSERT INTO balance_operations (user_id, kind, amount_micros,"
                    " balance_after_micros, idempotency_key) VALUES (42, 'purchase', :a, 0, :k)"
                ),
                {"a": stars * 13000, "k": f"stars:{charge}"},
            )
        await conn.execute(
            text(
                "INSERT INTO balance_operations (user_id, kind, amount_micros,"
                " balance_after_micros, idempotency_key)"
                " VALUES (42, 'purchase_refund', -650000, 0, 'stars-refund:b')"
            )
        )

    result = await run_cli({"DATABASE_URL": database_url}, tmp_path, "admin", "report")

    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Stars income per day")))
    header, today, total = (line.split() for line in lines[start + 1 : start + 4])
    assert header == [
        "day",
        "payments",
        "stars",
        "refunds",
        "refunded_stars",
        "net_stars",
        "income",
        "charged",
        "provider_cost",
        "margin",
    ]
    assert today[1:] == [
        "2",
        "150",
        "1",
        "50",
        "100",
        "$1.300000",
        "$0.012000",
        "$0.010000",
        "$1.290000",
    ]
    assert total[0] == "sum" and total[1:] == today[1:]
    [row] = await fetch(
        engine, "SELECT total_purchased_usd FROM admin_user_costs WHERE user_id = 42"
    )
    assert row == (Decimal("1.3"),)  # 100 Stars bought; the 50 refunded are netted out
