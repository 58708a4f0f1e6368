"""`python -m bot`: run the bot; `python -m bot admin ...` and `python -m bot migrate` for operators."""

from __future__ import annotations

import asyncio
import sys

from bot.config import ConfigurationError, load_settings
from bot.telegram.lazy_models import import_aiogram


def main(argv: list[str]) -> int:
    import_aiogram()
    if argv:
        from bot.cli import run_cli

        return run_cli(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    from bot.runtime import run

    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
