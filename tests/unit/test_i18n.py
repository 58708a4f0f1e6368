"""Message catalogs: every message of the code is in every catalog, translated, placeholders
intact; the locale choice; money and dates per locale."""

from __future__ import annotations

import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import (
    LANGUAGE_NAMES,
    LOCALES_DIR,
    _,
    create_i18n,
    format_moment,
    format_money,
    locale_scope,
    ngettext,
    pick_locale,
)

BOT_DIR = Path(__file__).resolve().parents[2] / "bot"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


def code_messages() -> dict[str, str | tuple[str, str]]:
    """Every message the code marks for translation, keyed by its msgid."""
    found: dict[str, str | tuple[str, str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(BOT_DIR), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        msgid = message if isinstance(message, str) else message[0]
        assert msgid, f"empty message at bot/{filename}:{lineno}"
        found[msgid] = message if isinstance(message, str) else (message[0], message[1])
    return found


def load(locale: str) -> Catalog:
    with (LOCALES_DIR / locale / "LC_MESSAGES" / "messages.po").open("rb") as po_file:
        return read_po(po_file, locale=locale)


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_the_code_marks_messages() -> None:
    assert len(code_messages()) > 50


def catalog_problems(
    catalog: Catalog, messages: dict[str, str | tuple[str, str]]
) -> dict[str, list[str]]:
    """Messages the catalog lacks, does not translate, or translates with other placeholders."""
    problems: dict[str, list[str]] = {"missing": [], "untranslated": [], "placeholders": []}
    for msgid, message in messages.items():
        entry = catalog.get(msgid)
        if entry is None:
            problems["missing"].append(msgid)
            continue
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        if not all(strings) or entry.fuzzy:
            problems["untranslated"].append(msgid)
        wanted = placeholders(msgid if isinstance(message, str) else message[1])
        if any(placeholders(s) != wanted for s in strings if s):
            problems["placeholders"].append(msgid)
    return {kind: found for kind, found in problems.items() if found}


@pytest.mark.parametrize("locale", sorted(LANGUAGE_NAMES))
def test_every_message_is_in_the_catalog_and_translated(locale: str) -> None:
    assert catalog_problems(load(locale), code_messages()) == {}


def test_a_catalog_without_a_message_fails_the_check() -> None:
    catalog = load("ru")
    messages = code_messages()
    dropped = "Nothing is running right now."
    catalog.delete(dropped)
    catalog.get("Model: {model}").string = "Модель: {name}"  # type: ignore[union-attr]
    assert catalog_problems(catalog, messages) == {
        "missing": [dropped],
        "placeholders": ["Model: {model}"],
    }


def test_catalogs_load_and_translate() -> None:
    i18n = create_i18n()
    assert set(i18n.available_locales) == set(LANGUAGE_NAMES)
    with locale_scope(i18n, "ru"):
        assert _("Working…") == "Работаю…"
        assert ngettext("({count} image)", "({count} images)", 1) == "({count} изображение)"
        assert ngettext("({count} image)", "({count} images)", 3) == "({count} изображения)"
        assert ngettext("({count} image)", "({count} images)", 5) == "({count} изображений)"
    with locale_scope(i18n, "en"):
        assert _("Working…") == "Working…"
    assert _("Working…") == "Working…"  # outside any context: English


@pytest.mark.parametrize(
    ("chosen", "language_code", "expected"),
    [
        ("ru", "en", "ru"),
        (None, "ru", "ru"),
        (None, "ru-RU", "ru"),
        (None, "de", "en"),
        (None, None, "en"),
        ("xx", "ru", "ru"),
        ("en", "ru", "en"),
    ],
)
def test_locale_is_the_choice_else_telegrams_else_english(
    chosen: str | None, language_code: str | None, expected: str
) -> None:
    assert pick_locale(chosen, language_code) == expected


@pytest.mark.parametrize(
    ("micros", "en", "ru"),
    [
        (500_000, "$0.50", "0,50\xa0$"),
        (134_000, "$0.1340", "0,1340\xa0$"),
        (1, "$0.000001", "0,000001\xa0$"),
        (-2_500, "-$0.0025", "-0,0025\xa0$"),
        (10_000_000_000, "$10000.00", "10000,00\xa0$"),
    ],
)
def test_money_is_formatted_per_locale(micros: int, en: str, ru: str) -> None:
    assert (format_money(micros, "en"), format_money(micros, "ru")) == (en, ru)


def test_dates_are_formatted_per_locale() -> None:
    moment = datetime(2026, 12, 4, 22, 30, tzinfo=UTC)
    assert format_moment(moment, locale="en") == "04 Dec 22:30"
    assert format_moment(moment, locale="ru") == "04 дек. 22:30"


def test_a_russian_refusal_after_a_paid_transcription_says_what_was_charged() -> None:
    from bot.services.inputs import NO_SPEECH_REPLY
    from bot.turns.replies import with_intake_charge

    with locale_scope(create_i18n(), "ru"):
        reply = with_intake_charge(_(NO_SPEECH_REPLY), 1234)
    assert reply == (
        "В этой записи не слышно речи. "
        "Списана только расшифровка вашего голосового сообщения (0,001234\xa0$)."
    )
