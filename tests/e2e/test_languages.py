"""Languages end to end: Telegram's language_code, /language, money per locale, the command menu
per language, and a turn's own replies in the sender's language."""

from __future__ import annotations

from bot.db.session import create_engine
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import scalar
from tests.fakes.anthropic import Delay, FakeAnthropic, overloaded, text_reply
from tests.fakes.telegram import FakeTelegram, SentItem

RU_USER, EN_USER = 75_001, 75_002


async def reply_to(telegram: FakeTelegram, user_id: int, text: str, **options: object) -> SentItem:
    before = len(telegram.sent(user_id))
    telegram.push_text(user_id, text, **options)  # type: ignore[arg-type]
    return (await telegram.wait_for_sent(user_id, before + 1, timeout=20))[before]


async def test_languages_end_to_end(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic, database_url: str
) -> None:
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000", ANTHROPIC_MAX_RETRIES="0")
    engine = create_engine(database_url)
    try:
        # The command menu, once per language.
        await telegram.wait_for(lambda: bool(telegram.commands(language_code="ru")), timeout=20)
        menu_en = {c["command"]: c["description"] for c in telegram.commands()}
        menu_ru = {c["command"]: c["description"] for c in telegram.commands(language_code="ru")}
        assert menu_en["stop"] == "Stop the answer in progress"
        assert menu_ru["stop"] == "Остановить текущий ответ"
        assert set(menu_en) == set(menu_ru) >= {"start", "help", "model", "language", "stop"}

        # Telegram says Russian: Russian, with money as Russian writes it.
        start = await reply_to(telegram, RU_USER, "/start", language_code="ru")
        assert start.text is not None
        assert start.text.startswith("Привет, Alice! Я ассистент на основе Claude.")
        assert "Ваш баланс: 0,50\xa0$." in start.text

        # An English speaker chooses Russian with /language.
        menu = await reply_to(telegram, EN_USER, "/balance", language_code="en")
        assert (menu.text or "").startswith("Your balance: $0.50")
        choice = await reply_to(telegram, EN_USER, "/language", language_code="en")
        assert choice.text == "Choose your language:"
        assert choice.reply_markup is not None
        buttons = [row[0] for row in choice.reply_markup["inline_keyboard"]]
        assert [(b["text"], b["callback_data"]) for b in buttons] == [
            ("✓ English", "lang:en"),
            ("Русский", "lang:ru"),
        ]
        before = len(telegram.sent(EN_USER))
        assert choice.message_id is not None
        telegram.push_callback(EN_USER, "lang:ru", message_id=choice.message_id)
        done = (await telegram.wait_for_sent(EN_USER, before + 1, timeout=20))[before]
        assert done.text == "Готово: я буду говорить с вами по-русски."
        locale = await scalar(engine, "SELECT locale FROM users WHERE id = :u", u=EN_USER)
        assert locale == "ru"

        balance = await reply_to(telegram, EN_USER, "/balance", language_code="en")
        assert (balance.text or "").startswith("Ваш баланс: 0,50\xa0$")
        assert "Приветственный бонус" in (balance.text or "")

        # A turn speaks the sender's language too (here: Claude is overloaded).
        anthropic_fake.script(overloaded())
        failed = await reply_to(telegram, EN_USER, "hello", language_code="en")
        assert (
            failed.text == "Claude сейчас перегружен. Попробуйте через минуту; ничего не списано."
        )

        # So does a file the intake refuses.
        before = len(telegram.sent(EN_USER))
        telegram.push_document(
            EN_USER, b"\x00\x01not an image", filename="notes.bin", mime_type="image/png"
        )
        [refused] = (await telegram.wait_for_sent(EN_USER, before + 1, timeout=20))[before:]
        assert refused.text == (
            "Я понимаю изображения JPEG, PNG, WebP и GIF; этот файл не из их числа."
        )
    finally:
        await engine.dispose()


async def test_a_restart_notice_speaks_the_persons_language(
    start_bot: StartBot, telegram: FakeTelegram, anthropic_fake: FakeAnthropic
) -> None:
    bot = await start_bot(SHUTDOWN_GRACE_SECONDS="1")
    anthropic_fake.script(Delay(30.0, text_reply("This never arrives.")))
    telegram.push_text(RU_USER, "Подумай как следует.", language_code="ru")
    await anthropic_fake.wait_for_requests(1, timeout=15)
    assert await bot.stop() == 0

    await start_bot()
    [notice] = await telegram.wait_for_sent(RU_USER, 1, timeout=15)
    assert notice.text == (
        "Меня перезапустили, пока я работал над вашим последним сообщением, и оно осталось без "
        "ответа. За незаконченную часть ничего не списано. Пожалуйста, отправьте его ещё раз."
    )
