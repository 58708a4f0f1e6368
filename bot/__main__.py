"""`python -m bot`: run the bot; `python -m bot admin ...` and `python -m bot migrate` for operators."""

from __future__ import annotations

import asyncio
import signal
import sys
from types import FrameType

from bot.config import ConfigurationError, load_settings


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    # Until the event loop takes the signals over, SIGTERM stops the process like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 0


def _main(argv: list[str]) -> int:
    from bot.telegram.lazy_models import import_aiogram

    import_aiogram()
    if argv:
        from bot.cli import run_cli

        return run_cli(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    from bot.runtime import StartupError, run
    from bot.services.price_file import load_price_table

    try:
        prices = load_price_table(settings)
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(settings, prices))
    except StartupError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
