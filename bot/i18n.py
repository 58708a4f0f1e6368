"""Languages: message catalogs (gettext, through aiogram's i18n), locale choice, money and dates.

Every text a person reads is a msgid in English wrapped in `_()` where it is used, or marked with
`N_()` where it is defined as a constant and translated with `_()` when sent. The catalogs are
`bot/locales/<locale>/LC_MESSAGES/messages.po`, compiled in memory when the bot starts (no
build step, no compiled files that can go stale). `tests/unit/test_i18n.py` fails when a
catalog lacks a message of the code.

The locale of a person: the one chosen with /language, else their Telegram `language_code` when
there is a catalog for it, else English.
"""

from __future__ import annotations

import copy
import gettext
import io
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from aiogram.types import BotCommand, TelegramObject, User
from aiogram.utils.i18n import I18n, I18nMiddleware
from aiogram.utils.i18n.context import get_i18n

LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"
DEFAULT_LOCALE = "en"
LANGUAGE_NAMES = {"en": "English", "ru": "Русский"}
MICROS_PER_USD = 1_000_000
_CENT_MICROS = 10_000

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def N_(message: str) -> str:  # noqa: N802 - the gettext convention for "mark, translate later"
    """Marks a constant for extraction; it is translated with `_()` where it is used."""
    return message


def _(message: str) -> str:
    """The message in the current locale (English outside any i18n context)."""
    i18n = I18n.get_current(no_error=True)
    return message if i18n is None else i18n.gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural message for `n` in the current locale (Russian has three forms)."""
    i18n = I18n.get_current(no_error=True)
    if i18n is None:
        return singular if n == 1 else plural
    return i18n.gettext(singular, plural, n)


def compile_catalogs(path: Path = LOCALES_DIR) -> dict[str, gettext.GNUTranslations]:
    """Every `<locale>/LC_MESSAGES/messages.po` under `path`, compiled in memory."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    translations: dict[str, gettext.GNUTranslations] = {}
    for po_path in sorted(path.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        locale = po_path.parent.parent.name
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file, locale=locale)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)
        compiled.seek(0)
        translations[locale] = gettext.GNUTranslations(compiled)
    return translations


def create_i18n(path: Path = LOCALES_DIR) -> I18n:
    """aiogram's I18n over our catalogs, read from the `.po` files (no compiled files).

    A plain I18n, not a subclass: aiogram keeps the current instance per class, and its
    `gettext` helpers look for an `I18n`. It is created on a domain with no files, then given
    the compiled catalogs.
    """
    i18n = I18n(path=path, default_locale=DEFAULT_LOCALE, domain="no-compiled-catalogs")
    i18n.domain = DOMAIN
    i18n.locales = compile_catalogs(path)
    return i18n


def pick_locale(chosen: str | None, language_code: str | None) -> str:
    """The chosen locale, else Telegram's language_code when we have it, else English."""
    if chosen in LANGUAGE_NAMES:
        return chosen
    base = (language_code or "").split("-")[0].lower()
    return base if base in LANGUAGE_NAMES else DEFAULT_LOCALE


class ChosenLocales(Protocol):
    async def chosen_locale(self, user_id: int) -> str | None: ...


class LocaleMiddleware(I18nMiddleware):
    """The person's locale for everything a handler says.

    Registered on updates (before the gate, which has not read the user yet: Telegram's
    language_code), on messages after the gate (the person's choice, from the gate's state), and
    on button presses (the choice, looked up).
    """

    def __init__(self, i18n: I18n, users: ChosenLocales | None = None) -> None:
        super().__init__(i18n)
        self._users = users

    async def get_locale(self, event: TelegramObject, data: dict[str, Any]) -> str:
        who: User | None = data.get("event_from_user")
        state = data.get("user_state")
        chosen: str | None = getattr(state, "locale", None)
        if state is None and self._users is not None and who is not None:
            chosen = await self._users.chosen_locale(who.id)
        return pick_locale(chosen, who.language_code if who else None)


@contextmanager
def locale_scope(i18n: I18n, locale: str) -> Iterator[None]:
    """Translate in `locale` inside the block (a turn runs outside the handler's context)."""
    with i18n.context(), i18n.use_locale(locale):
        yield


def current_locale() -> str:
    try:
        return get_i18n().current_locale
    except LookupError:
        return DEFAULT_LOCALE


def format_money(micros: int, locale: str | None = None) -> str:
    """Dollars as the locale writes them, exact: 2 decimals for whole cents, else 4 to 6.

    English "$0.50" and "$0.1340"; Russian "0,50 $" and "0,1340 $".
    """
    from babel import Locale

    magnitude = abs(micros)
    if magnitude % _CENT_MICROS == 0:
        decimals = 2
    else:
        trimmed = f"{Decimal(magnitude) / MICROS_PER_USD:.6f}".rstrip("0")
        decimals = max(len(trimmed.split(".")[1]), 4)
    amount = Decimal(micros) / MICROS_PER_USD
    babel_locale = Locale.parse(locale or current_locale())
    pattern = copy.copy(babel_locale.currency_formats["standard"])
    pattern.frac_prec = (decimals, decimals)
    text: str = pattern.apply(
        amount, babel_locale, currency="USD", currency_digits=False, group_separator=False
    )
    return text


def format_moment(
    moment: datetime, pattern: str = "dd MMM HH:mm", locale: str | None = None
) -> str:
    """A UTC date and time in the locale's words ("04 Dec 22:30", "04 дек. 22:30")."""
    from babel.dates import format_datetime

    return format_datetime(
        moment.astimezone(UTC), pattern, tzinfo=UTC, locale=locale or current_locale()
    )


COMMANDS = (
    ("start", N_("Greeting and your balance")),
    ("help", N_("What I can do, and prices")),
    ("new", N_("Start a fresh conversation")),
    ("balance", N_("Balance and recent charges")),
    ("usage", N_("Spending over the last 30 days")),
    ("buy", N_("Top up with Telegram Stars")),
    ("refund", N_("Refund a Stars purchase")),
    ("limit", N_("Daily spending limit")),
    ("receipts", N_("Cost of each answer: on or off")),
    ("paysupport", N_("Help with payments")),
    ("terms", N_("Terms of service")),
    ("privacy", N_("Privacy policy")),
    ("model", N_("Choose the Claude model")),
    ("language", N_("Choose the language")),
    ("stop", N_("Stop the answer in progress")),
)


def bot_commands(i18n: I18n, locale: str) -> list[BotCommand]:
    """The command menu in `locale` (set once per language with setMyCommands)."""
    return [
        BotCommand(command=name, description=i18n.gettext(text, locale=locale))
        for name, text in COMMANDS
    ]
