"""admin_image_price_drift: usage-based image cost against the per-image list price."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ROWS = [
    # created_at, model, size, version, status, image tokens, usage cost, list price
    ("2026-12-03 10:00+00", "gemini-3-pro-image", "2K", "g1", "ok", 1120, 136_000, 134_000),
    ("2026-12-03 11:00+00", "gemini-3-pro-image", "2K", "g1", "ok", 1120, 138_000, 134_000),
    ("2026-12-03 12:00+00", "gemini-3-pro-image", "2K", "g1", "ok", 0, 134_000, 134_000),
    ("2026-12-03 13:00+00", "gemini-3-pro-image", "2K", "g1", "error", 0, 0, 134_000),
    ("2026-12-03 14:00+00", "gemini-3-pro-image", "4K", "g1", "ok", 2000, 243_000, 240_000),
    ("2026-12-04 09:00+00", "gpt-image-2.6-sunburst", "1K", "o1", "ok", 4160, 124_900, 130_000),
]


async def test_drift_per_day_model_size_and_version(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO users (id, balance_micros) VALUES (1, 0)"))
        for created, model, size, version, status, tokens, cost, listed in ROWS:
            await conn.execute(
                text(
                    "INSERT INTO api_calls (user_id, provider, model, purpose, status, image_count,"
                    " image_size, image_output_tokens, provider_cost_micros,"
                    " image_list_price_micros, price_version, created_at)"
                    " VALUES (1, :provider, :model, 'generate_image', :status, :count, :size,"
                    " :tokens, :cost, :listed, :version, CAST(CAST(:created AS text) AS timestamptz))"
                ),
                {
                    "provider": "openai" if model.startswith("gpt") else "google",
                    "model": model,
                    "status": status,
                    "count": 1 if status == "ok" else 0,
                    "size": size,
                    "tokens": tokens,
                    "cost": cost,
                    "listed": listed,
                    "version": version,
                    "created": created,
                },
            )
        # A chat call and an image row from before the list price was recorded: not in the view.
        await conn.execute(
            text(
                "INSERT INTO api_calls (user_id, provider, model, purpose, status,"
                " provider_cost_micros) VALUES (1, 'anthropic', 'claude-sonnet-5-5', 'chat', 'ok',"
                " 5000), (1, 'google', 'gemini-3-pro-image', 'generate_image', 'ok', 134000)"
            )
        )
        result = await conn.execute(
            text(
                "SELECT day::text, provider, model, image_size, price_version, images,"
                " images_with_usage, image_output_tokens, avg_image_output_tokens,"
                " usage_cost_usd, list_price_usd, drift_usd, drift_pct"
                " FROM admin_image_price_drift ORDER BY day, model, image_size"
            )
        )
        rows = [tuple(row) for row in result]
    assert rows == [
        (
            "2026-12-03",
            "google",
            "gemini-3-pro-image",
            "2K",
            "g1",
            3,
            2,
            2240,
            Decimal("1120.0"),
            Decimal("0.408"),
            Decimal("0.402"),
            Decimal("0.006"),
            Decimal("1.49"),
        ),
        (
            "2026-12-03",
            "google",
            "gemini-3-pro-image",
            "4K",
            "g1",
            1,
            1,
            2000,
            Decimal("2000.0"),
            Decimal("0.243"),
            Decimal("0.24"),
            Decimal("0.003"),
            Decimal("1.25"),
        ),
        (
            "2026-12-04",
            "openai",
            "gpt-image-2.6-sunburst",
            "1K",
            "o1",
            1,
            1,
            4160,
            Decimal("4160.0"),
            Decimal("0.1249"),
            Decimal("0.13"),
            Decimal("-0.0051"),
            Decimal("-3.92"),
        ),
    ]
