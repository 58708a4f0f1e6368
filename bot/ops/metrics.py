"""Prometheus metrics in a registry the application owns (no module-level global registry).

Counters move where things happen: a provider call is counted when its api_calls row is written
(the metered path's `on_recorded`), a turn when it ends (ChatService's `on_finished`), a 429 when Telegram answers
one (RetryAfterMiddleware's `on_retry_after`). Open holds and inbox lag are read from Postgres at
scrape time, so every replica reports the shared truth.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.direct import DirectSQL
from bot.services.ledger import CallRecord, Settlement

TURN_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 89.0, 144.0, 240.0)

_SHARED_STATE = """
    SELECT
        (SELECT count(*) FROM balance_holds WHERE status = 'held') AS holds_open,
        (SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)
         FROM inbound_updates WHERE status = 'received') AS inbox_lag
"""


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.turns = Counter("bot_turns", "Chat turns by outcome", ["outcome"], registry=r)
        self.turn_seconds = Histogram(
            "bot_turn_seconds", "Chat turn duration", buckets=TURN_BUCKETS, registry=r
        )
        self.provider_calls = Counter(
            "bot_provider_calls",
            "Provider calls recorded in api_calls",
            ["provider", "model", "purpose", "status"],
            registry=r,
        )
        self.provider_cost = Counter(
            "bot_provider_cost_micros",
            "Provider list cost of recorded calls, in micro-USD",
            ["provider", "model"],
            registry=r,
        )
        self.charged = Counter(
            "bot_charged_micros", "Charged to people's balances, in micro-USD", registry=r
        )
        self.holds_open = Gauge("bot_holds_open", "Balance holds open (all replicas)", registry=r)
        self.inbox_lag = Gauge(
            "bot_inbox_lag_seconds",
            "Age of the oldest update recorded but not yet started (all replicas)",
            registry=r,
        )
        self.retry_after = Counter(
            "bot_telegram_retry_after", "429 answers from Telegram (flood waits)", registry=r
        )

    def turn_finished(self, outcome: str, seconds: float) -> None:
        self.turns.labels(outcome=outcome).inc()
        self.turn_seconds.observe(seconds)

    def call_recorded(self, call: CallRecord, settlement: Settlement) -> None:
        """An api_calls row was written (the metered path tells of each one)."""
        charged_micros = settlement.charged_micros
        self.provider_calls.labels(
            provider=call.provider, model=call.model, purpose=call.purpose, status=call.status
        ).inc()
        if call.provider_cost_micros > 0:
            self.provider_cost.labels(provider=call.provider, model=call.model).inc(
                call.provider_cost_micros
            )
        if charged_micros > 0:
            self.charged.inc(charged_micros)

    def telegram_retry_after(self) -> None:
        self.retry_after.inc()

    async def refresh_shared(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        row = await DirectSQL.of(sessionmaker).fetchrow(_SHARED_STATE)
        if row is not None:
            self.holds_open.set(int(row["holds_open"]))
            self.inbox_lag.set(float(row["inbox_lag"]))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
