"""`python -m bot`: run the bot; `python -m bot admin ...` and `python -m bot migrate` for operators."""

from __future__ import annotations

import asyncio
import sys

from bot.config import ConfigurationError, load_settings
from bot.integrations.anthropic_import import import_anthropic
from bot.telegram.lazy_models import import_aiogram


def main(argv: list[str]) -> int:
    import_aiogram()
    import_anthropic()
    if argv:
        from bot.cli import run_cli

        return run_cli(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    from bot.app import run, unpriced_models_problem
    from bot.services.pricing import PriceTable

    problem = unpriced_models_problem(settings, PriceTable())
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    return asyncio.run(run(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
