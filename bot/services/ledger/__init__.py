"""The ledger and holds (writes). The read side lives in bot/services/usage.py."""

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

__all__ = [
    "Attach",
    "BalanceView",
    "BillingError",
    "CallRecord",
    "CallStatus",
    "DailyLimitReached",
    "Hold",
    "HoldNotOpenError",
    "IdempotencyConflictError",
    "InsufficientBalance",
    "Ledger",
    "Operation",
    "Provider",
    "Purpose",
    "Settlement",
    "UnknownUserError",
    "starter_key",
]
