"""The ledger and holds (writes). The read side lives in bot/services/usage.py.

`Ledger` runs each operation as its own transaction (the metered path, bot/services/metered.py,
uses it for every provider call); `post`, `hold_within`, `capture_whole`, `release_locked`
and `debit_available` are the same operations inside a caller's transaction (Stars payments and refunds)."""

from bot.services.ledger.holds import HoldKind, hold_within
from bot.services.ledger.ledger import Attach, Ledger
from bot.services.ledger.model import (
    BalanceView,
    BillingError,
    CallRecord,
    CallStatus,
    DailyLimitReached,
    Hold,
    HoldNotOpenError,
    IdempotencyConflictError,
    InsufficientBalance,
    Operation,
    Provider,
    Purpose,
    Settlement,
    UnknownUserError,
    starter_key,
)
from bot.services.ledger.rows import debit_available, post
from bot.services.ledger.settle import capture_whole, release_locked

__all__ = [
    "Attach",
    "BalanceView",
    "BillingError",
    "CallRecord",
    "CallStatus",
    "DailyLimitReached",
    "Hold",
    "HoldKind",
    "HoldNotOpenError",
    "IdempotencyConflictError",
    "InsufficientBalance",
    "Ledger",
    "Operation",
    "Provider",
    "Purpose",
    "Settlement",
    "UnknownUserError",
    "capture_whole",
    "debit_available",
    "hold_within",
    "post",
    "release_locked",
    "starter_key",
]
