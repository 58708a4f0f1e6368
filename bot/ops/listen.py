"""``host:port`` settings (METRICS_LISTEN, WEBHOOK_LISTEN)."""

from __future__ import annotations


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port``; ``:port`` means every interface."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {value!r}")
    return host or "0.0.0.0", int(port)
