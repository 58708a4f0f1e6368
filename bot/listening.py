"""The bot's own HTTP servers (METRICS_LISTEN, WEBHOOK_LISTEN) start listening here: an address
that cannot be listened on (taken, not this machine's, a privileged port) stops start-up with one
line for the operator that names the setting, not a traceback."""

from __future__ import annotations

from aiohttp import web

from bot.startup import StartupError


async def listen(runner: web.AppRunner, host: str, port: int, *, setting: str) -> list[str]:
    """Serve `runner` on host:port; the addresses it is bound to (port 0 picks a free one)."""
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StartupError(
            f"Cannot listen on {host}:{port} ({setting}): {reason}. "
            f"Set {setting} to a free host:port on this machine."
        ) from None
    return [_shown(address) for address in runner.addresses]


def _shown(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
