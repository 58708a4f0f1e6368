"""`python -m bot admin topup|report` as an operator runs them: a subprocess on the real database."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.harness import PROJECT_ROOT

BAD_AMOUNT = "The amount must be a positive number of dollars up to 10000, e.g. 5 or 2.50"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


async def run_cli(database_url: str, tmp_path: Path, *args: str) -> Result:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC", "GOOGLE", "GEMINI", "TELEGRAM", "DATABASE"))
    }
    env.update(
        DATABASE_URL=database_url,
        DATA_DIR=str(tmp_path / "data"),
        SECRETS_DIR=str(tmp_path / "no-secrets"),
        PYTHONUNBUFFERED="1",
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


async def fetch(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def add_user(engine: AsyncEngine, user_id: int, username: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO users (id, username, first_name) VALUES (:id, :username, 'Ann')"),
            {"id": user_id, "username": username},
        )


async def add_call(
    engine: AsyncEngine,
    user_id: int,
    purpose: str,
    *,
    provider_cost: int,
    charged: int,
    images: int = 0,
    status: str = "ok",
    age: timedelta = timedelta(0),
) -> None:
    google = purpose == "generate_image"
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO api_calls (user_id, provider, model, purpose, status, image_count, "
                "input_tokens, output_tokens, provider_cost_micros, charged_micros, created_at) "
                "VALUES (:user_id, :provider, :model, :purpose, :status, :images, :input, "
                ":output, :cost, :charged, now() - CAST(:age AS interval))"
            ),
            {
                "user_id": user_id,
                "provider": "google" if google else "anthropic",
                "model": "gemini-3-pro-image" if google else "claude-sonnet-5-5",
                "purpose": purpose,
                "status": status,
                "images": images,
                "input": 0 if google else 1000,
                "output": 0 if google else 500,
                "cost": provider_cost,
                "charged": charged,
                "age": age,
            },
        )


async def test_topup_credits_through_the_ledger(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await add_user(engine, 42, "ann")
    first = await run_cli(database_url, tmp_path, "admin", "topup", "42", "5")
    assert first.code == 0, first.stderr
    assert first.stdout == "Credited $5.00 to 42; balance is now $5.00.\n"
    second = await run_cli(database_url, tmp_path, "admin", "topup", "42", "0.134")
    assert second.code == 0, second.stderr
    assert second.stdout == "Credited $0.1340 to 42; balance is now $5.1340.\n"

    ledger = await fetch(
        engine,
        "SELECT kind, amount_micros, balance_after_micros, admin_user_id, "
        "idempotency_key LIKE 'topup:cli:%' FROM balance_operations WHERE user_id = 42 ORDER BY id",
    )
    assert ledger == [
        ("topup", 5_000_000, 5_000_000, None, True),
        ("topup", 134_000, 5_134_000, None, True),
    ]
    assert await fetch(engine, "SELECT balance_micros FROM users WHERE id = 42") == [(5_134_000,)]
    assert await fetch(engine, "SELECT user_id FROM admin_balance_mismatches") == []


async def test_a_bad_amount_exits_2_with_one_line(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await add_user(engine, 42, "ann")
    amounts = ["abc", "0", "-1", "Infinity", "NaN", "10000.01", "1.0000001", "0.0000001"]
    results = await asyncio.gather(
        *(run_cli(database_url, tmp_path, "admin", "topup", "42", a) for a in amounts)
    )
    for amount, result in zip(amounts, results, strict=True):
        assert (result.code, result.stdout) == (2, ""), amount
        assert len(result.stderr.splitlines()) == 1, result.stderr
        if amount in {"1.0000001", "0.0000001"}:
            assert "at most 6 decimal places" in result.stderr, result.stderr
        else:
            assert result.stderr.startswith(BAD_AMOUNT), result.stderr
    assert await fetch(engine, "SELECT id FROM balance_operations") == []
    assert await fetch(engine, "SELECT balance_micros FROM users WHERE id = 42") == [(0,)]


async def test_a_user_id_outside_bigint_exits_2_with_one_line(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    ids = ["99999999999999999999999", "9223372036854775808", "0", "-5", "abc", "1e3", "٣"]
    results = await asyncio.gather(
        *(run_cli(database_url, tmp_path, "admin", "topup", user_id, "5") for user_id in ids)
    )
    for user_id, result in zip(ids, results, strict=True):
        assert (result.code, result.stdout) == (2, ""), user_id
        [line] = result.stderr.splitlines()
        assert line.startswith("The user id must be a Telegram user id"), line
        assert "Traceback" not in result.stderr


async def test_help_says_that_no_command_runs_the_bot(database_url: str, tmp_path: Path) -> None:
    result = await run_cli(database_url, tmp_path, "--help")
    assert result.code == 0, result.stderr
    assert "With no command at all, `python -m bot` runs the bot" in result.stdout


async def test_topup_for_an_unknown_user_exits_2_with_one_line(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    result = await run_cli(database_url, tmp_path, "admin", "topup", "777", "5")
    assert (result.code, result.stdout) == (2, "")
    assert result.stderr == "No user 777: a person must write to the bot once first.\n"
    assert await fetch(engine, "SELECT id FROM balance_operations") == []


async def seed_costs(engine: AsyncEngine) -> None:
    await add_user(engine, 42, "ann")
    await add_user(engine, 43, "bob")
    await add_call(engine, 42, "chat", provider_cost=10_000, charged=12_000)
    await add_call(engine, 42, "generate_image", provider_cost=134_000, charged=160_800, images=1)
    await add_call(engine, 42, "generate_image", provider_cost=0, charged=0, status="error")
    await add_call(engine, 43, "chat", provider_cost=2_000, charged=2_400, age=timedelta(days=3))
    await add_call(engine, 43, "chat", provider_cost=50_000, charged=60_000, age=timedelta(days=10))


async def test_report_prints_a_table_of_the_window(
    database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    await seed_costs(engine)
    result = await run_cli(database_url, tmp_path, "admin", "report", "--days", "7")
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Costs for 7 day(s) since ")

    users = {cells[0]: cells for cells in map(str.split, lines) if cells[:1] in (["42"], ["43"])}
    assert users["42"] == [
        "42",
        "ann",
        "3",
        "1",
        "$0.144000",
        "$0.172800",
        "$0.028800",
        "$0.000000",
    ]
    assert users["43"] == [
        "43",
        "bob",
        "1",
        "0",
        "$0.002000",
        "$0.002400",
        "$0.000400",
        "$0.000000",
    ]
    [total] = [line.split() for line in lines if line.startswith("total")]
    assert total == ["total", "4", "1", "1", "$0.146000", "$0.175200", "$0.029200"]


async def test_report_as_csv(database_url: str, engine: AsyncEngine, tmp_path: Path) -> None:
    await seed_costs(engine)
    await add_user(engine, 44, "cat")
    topup = await run_cli(database_url, tmp_path, "admin", "topup", "44", "7.50")
    assert topup.code == 0, topup.stderr
    result = await run_cli(database_url, tmp_path, "admin", "report", "--days", "7", "--csv")
    assert result.code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert next(csv.reader(io.StringIO(lines[0])))[:5] == [
        "day",
        "provider",
        "model",
        "purpose",
        "calls",
    ]
    blank = lines.index("")
    daily, users = lines[:blank], lines[blank + 1 :]
    body = sorted(line.split(",", 1)[1] for line in daily[1:-1])
    assert body == [
        "anthropic,claude-sonnet-5-5,chat,1,0,1000,500,0,0,0,0.002000,0.002400,0.000400",
        "anthropic,claude-sonnet-5-5,chat,1,0,1000,500,0,0,0,0.010000,0.012000,0.002000",
        "google,gemini-3-pro-image,generate_image,2,1,0,0,0,0,1,0.134000,0.160800,0.026800",
    ]
    assert daily[-1] == "total,,,,4,1,,,,,1,0.146000,0.175200,0.029200"
    # The per-user table follows: 44 topped up and made no call, and is listed all the same.
    assert users == [
        "user_id,username,calls,images,provider_cost,charged,margin,balance",
        "42,ann,3,1,0.144000,0.172800,0.028800,0.000000",
        "43,bob,1,0,0.002000,0.002400,0.000400,0.000000",
        "44,cat,0,0,0.000000,0.000000,0.000000,7.500000",
    ]

    month = await run_cli(database_url, tmp_path, "admin", "report", "--days", "30", "--csv")
    assert month.code == 0, month.stderr
    month_daily = month.stdout.split("\n\n")[0].strip().splitlines()
    assert month_daily[-1].endswith(",5,1,,,,,1,0.196000,0.235200,0.039200")
