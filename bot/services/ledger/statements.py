"""The two ledger statements every chat turn runs, on asyncpg directly (bot/db/direct.py).

Each does the whole common case atomically or changes nothing; anything else falls through to
the ledger's transactions, which decide it. tests/billing/test_statements.py runs them directly.
"""

from __future__ import annotations

from bot.services.controls import SPENT_TODAY_SQL
from bot.services.ledger.model import CallRecord

# The api_calls columns a CallRecord fills, here and in the ledger's own inserts.
API_CALL_COLUMNS = (
    "provider",
    "model",
    "purpose",
    "tool_use_id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "image_count",
    "image_size",
    "image_output_tokens",
    "image_list_price_micros",
    "web_search_requests",
    "web_fetch_requests",
    "provider_cost_micros",
    "price_version",
    "status",
    "error",
    "provider_cost_unknown",
    "request_id",
    "duration_ms",
)


def api_call_values(call: CallRecord) -> dict[str, object]:
    """The call's api_calls columns, in `API_CALL_COLUMNS` order."""
    values = {name: getattr(call, name) for name in API_CALL_COLUMNS}
    return values | {"user_id": call.user_id, "error": call.stored_error}


# Reserve and record the hold in one statement; no row when the balance is too low or the user
# is unknown, a unique violation when the key was used: either way nothing changed. $6 says
# whether the person's own daily limit (/limit) applies: to a provider call's hold, not a refund's.
# The daily limit: what is held and spent today leaves room for `amount`.
WITHIN_DAILY_LIMIT = (
    "(daily_limit_micros IS NULL OR daily_limit_micros - held_micros - ("
    + SPENT_TODAY_SQL.format(user="users.id")
    + ") >= {amount})"
)

# What refused a hold when the balance was enough: the limit, held and spent today.
DAILY_LIMIT_STATE = (
    "SELECT daily_limit_micros, held_micros, ("
    + SPENT_TODAY_SQL.format(user=":id")
    + ") AS spent FROM users WHERE id = :id"
)

HOLD = f"""
    WITH reserved AS (
        UPDATE users SET held_micros = held_micros + $2
        WHERE id = $1 AND balance_micros - held_micros >= $2
          AND (NOT $6::boolean OR {WITHIN_DAILY_LIMIT.format(amount="$2")})
        RETURNING id
    )
    INSERT INTO balance_holds (user_id, amount_micros, idempotency_key, description, expires_at)
    SELECT id, $2, $3, $4, now() + $5::interval FROM reserved
    RETURNING id
"""

# Capture an open hold with a charge no larger than it: close it, record the call, move the
# balance and append the ledger row, in one statement. No row when the hold is not open (or not
# this amount and user); a unique violation when the charge key was used. Either way nothing
# changed.
CAPTURE = f"""
    WITH closed AS (
        UPDATE balance_holds
        SET status = 'captured', captured_micros = $3, settled_at = now()
        WHERE id = $1 AND user_id = $2 AND status = 'held' AND amount_micros = $4
          AND $3 <= $4
        RETURNING user_id
    ), call AS (
        INSERT INTO api_calls (user_id, charged_micros, {", ".join(API_CALL_COLUMNS)})
        SELECT user_id, $3, {", ".join(f"${n}" for n in range(7, 7 + len(API_CALL_COLUMNS)))}
        FROM closed
        RETURNING id
    ), moved AS (
        UPDATE users SET balance_micros = balance_micros - $3, held_micros = held_micros - $4
        WHERE id = (SELECT user_id FROM closed)
        RETURNING balance_micros
    ), posted AS (
        INSERT INTO balance_operations
            (user_id, kind, amount_micros, balance_after_micros, idempotency_key, api_call_id,
             description)
        SELECT $2, 'charge', -$3, moved.balance_micros, $5, call.id, $6 FROM moved, call
        RETURNING id
    )
    SELECT call.id AS api_call_id, moved.balance_micros FROM call, moved, posted
"""


def capture_arguments(
    call: CallRecord, hold_id: int, hold_amount: int, charged: int, key: str
) -> list[object]:
    """CAPTURE's parameters, in order."""
    values = api_call_values(call)
    return [
        hold_id,
        call.user_id,
        charged,
        hold_amount,
        key,
        f"{call.purpose} {call.model}",
        *(values[name] for name in API_CALL_COLUMNS),
    ]
