"""Admin reports from the views on a seeded database, and money formatting."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.ledger import Ledger
from bot.services.money import format_usd, format_usd_exact
from bot.services.reports import (
    admin_report,
    render_csv,
    render_table,
    render_users_csv,
)
from tests.billing.conftest import create_user

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

CALLS = [
    # user, created_at, provider, model, purpose, status, tokens (in, out, read, write),
    # images, provider cost, charged
    (1, "2026-11-20 10:00+00:00", "google", "gemini-3-pro-image", "generate_image", "ok",
     (0, 0, 0, 0), 1, 134_000, 201_000),
    (1, "2026-11-19 23:59+00:00", "anthropic", "claude-sonnet-5-5", "chat", "ok",
     (1000, 500, 2000, 0), 0, 12_345, 18_518),
    (1, "2026-11-19 08:00+00:00", "google", "gemini-3-pro-image", "generate_image", "error",
     (0, 0, 0, 0), 0, 0, 0),
    (2, "2026-11-14 00:30+00:00", "anthropic", "claude-sonnet-5-5", "analyze_image", "ok",
     (700, 80, 0, 0), 0, 3_000, 4_500),
    (2, "2026-11-13 23:30+00:00", "anthropic", "claude-sonnet-5-5", "chat", "ok",
     (9000, 900, 0, 0), 0, 50_000, 75_000),
]  # fmt: skip


EXPECTED_TABLE = """\
Costs for 7 day(s) since 2026-11-14 (UTC, generated 2026-11-20 12:00)

Per user
user_id  username  calls  images  provider_cost    charged     margin    balance
      1  alice         3       1      $0.146345  $0.219518  $0.073173  $5.000000
      2  bob           1       0      $0.003000  $0.004500  $0.001500  $1.000000

Per day
day         provider   model               purpose         calls  failed  input_tok  \
output_tok  cache_read_tok  cache_write_tok  images  provider_cost    charged     margin
2026-11-14  anthropic  claude-sonnet-5-5   analyze_image       1       0        700  \
        80               0                0       0      $0.003000  $0.004500  $0.001500
2026-11-19  anthropic  claude-sonnet-5-5   chat                1       0       1000  \
       500            2000                0       0      $0.012345  $0.018518  $0.006173
2026-11-19  google     gemini-3-pro-image  generate_image      1       1          0  \
         0               0                0       0      $0.000000  $0.000000  $0.000000
2026-11-20  google     gemini-3-pro-image  generate_image      1       0          0  \
         0               0                0       1      $0.134000  $0.201000  $0.067000
total                                                          4       1             \
                                                  1      $0.149345  $0.224018  $0.074673
"""


async def _seed(sessionmaker: Sessions, billing: Ledger) -> None:
    await create_user(sessionmaker, 1, "alice")
    await create_user(sessionmaker, 2, "bob")
    await create_user(sessionmaker, 3, "carol")
    await billing.topup(1, 5_000_000, key="topup:1")
    await billing.topup(2, 1_000_000, key="topup:2")
    await billing.credit_starter(3, 500_000)
    async with sessionmaker() as session:
        for user, at, provider, model, purpose, status, tokens, images, cost, charged in CALLS:
            await session.execute(
                text(
                    "INSERT INTO api_calls (user_id, created_at, provider, model, purpose, status,"
                    " input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
                    " image_count, provider_cost_micros, charged_micros)"
                    " VALUES (:user, :at, :provider, :model, :purpose,"
                    " :status, :i, :o, :r, :w, :images, :cost, :charged)"
                ),
                {
                    "user": user,
                    "at": datetime.fromisoformat(at),
                    "provider": provider,
                    "model": model,
                    "purpose": purpose,
                    "status": status,
                    "i": tokens[0],
                    "o": tokens[1],
                    "r": tokens[2],
                    "w": tokens[3],
                    "images": images,
                    "cost": cost,
                    "charged": charged,
                },
            )
        await session.commit()


async def test_admin_report_on_a_seeded_database(sessionmaker: Sessions, billing: Ledger) -> None:
    await _seed(sessionmaker, billing)

    report = await admin_report(sessionmaker, days=7, now=NOW)

    assert report.since == date(2026, 11, 14)
    assert [
        (u.user_id, u.username, u.calls, u.images, u.provider_cost_micros, u.charged_micros)
        for u in report.users
    ] == [(1, "alice", 3, 1, 146_345, 219_518), (2, "bob", 1, 0, 3_000, 4_500)]
    assert [u.balance_micros for u in report.users] == [5_000_000, 1_000_000]
    assert [u.margin_micros for u in report.users] == [73_173, 1_500]
    daily = [
        (d.day.isoformat(), d.provider, d.purpose, d.calls, d.failed_calls, d.images)
        for d in report.daily
    ]
    assert daily == [
        ("2026-11-14", "anthropic", "analyze_image", 1, 0, 0),
        ("2026-11-19", "anthropic", "chat", 1, 0, 0),
        ("2026-11-19", "google", "generate_image", 1, 1, 0),
        ("2026-11-20", "google", "generate_image", 1, 0, 1),
    ]
    assert [(d.provider_cost_micros, d.charged_micros) for d in report.daily] == [
        (3_000, 4_500),
        (12_345, 18_518),
        (0, 0),
        (134_000, 201_000),
    ]
    totals = report.totals
    assert (totals.calls, totals.failed_calls, totals.images) == (4, 1, 1)
    assert (totals.provider_cost_micros, totals.charged_micros, totals.margin_micros) == (
        149_345,
        224_018,
        74_673,
    )

    assert render_csv(report) == (
        "day,provider,model,purpose,calls,failed,input_tok,output_tok,cache_read_tok,"
        "cache_write_tok,images,provider_cost,charged,margin\n"
        "2026-11-14,anthropic,claude-sonnet-5-5,analyze_image,1,0,700,80,0,0,0,"
        "0.003000,0.004500,0.001500\n"
        "2026-11-19,anthropic,claude-sonnet-5-5,chat,1,0,1000,500,2000,0,0,"
        "0.012345,0.018518,0.006173\n"
        "2026-11-19,google,gemini-3-pro-image,generate_image,1,1,0,0,0,0,0,"
        "0.000000,0.000000,0.000000\n"
        "2026-11-20,google,gemini-3-pro-image,generate_image,1,0,0,0,0,0,1,"
        "0.134000,0.201000,0.067000\n"
        "total,,,,4,1,,,,,1,0.149345,0.224018,0.074673\n"
    )
    assert render_users_csv(report) == (
        "user_id,username,calls,images,provider_cost,charged,margin,balance\n"
        "1,alice,3,1,0.146345,0.219518,0.073173,5.000000\n"
        "2,bob,1,0,0.003000,0.004500,0.001500,1.000000\n"
    )

    assert render_table(report) == EXPECTED_TABLE


async def test_admin_report_of_one_day_holds_only_today(
    sessionmaker: Sessions, billing: Ledger
) -> None:
    await _seed(sessionmaker, billing)
    report = await admin_report(sessionmaker, days=1, now=NOW)
    assert [u.user_id for u in report.users] == [1]
    assert [(d.purpose, d.charged_micros) for d in report.daily] == [("generate_image", 201_000)]
    assert report.totals.charged_micros == 201_000


@pytest.mark.parametrize(
    ("micros", "text_"),
    [
        (500_000, "$0.50"),
        (0, "$0.00"),
        (12_340_000, "$12.34"),
        (134_000, "$0.1340"),
        (42_000, "$0.0420"),
        (1_500, "$0.0015"),
        (123_457, "$0.123457"),
        (42, "$0.000042"),
        (1_234_560, "$1.23456"),
        (-500_000, "-$0.50"),
        (-134_000, "-$0.1340"),
    ],
)
def test_format_usd_is_exact_and_short(micros: int, text_: str) -> None:
    assert format_usd(micros) == text_


def test_format_usd_exact_always_has_six_decimals() -> None:
    assert format_usd_exact(134_000) == "$0.134000"
    assert format_usd_exact(5_000_000) == "$5.000000"
    assert format_usd_exact(-1) == "-$0.000001"
