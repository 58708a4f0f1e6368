"""Languages end to end: Telegram's language_code, /language, money per locale, the command menu
per language, and a turn's own replies in the sender's language."""

from __future__ import annotations

from bot.db.session import create_engine
from tests.e2e.conftest import StartBot
from tests.e2e.test_chat import scalar
from tests.fakes.anthropic import Delay, FakeAnthropic, overloaded, text_reply
from tests.fakes.telegram import FakeTelegram, SentItem

RU_USER, EN_USER, RU_BUYER = 75_001, 75_002, 75_003


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


async def test_a_russian_speaker_buys_and_limits_in_russian(
    start_bot: StartBot, telegram: FakeTelegram
) -> None:
    """/buy, its invoice, /limit and a pre-checkout refusal speak Russian, money as Russian
    writes it (Telegram's language_code for commands, the /language choice for the checkout)."""
    await start_bot(RATE_LIMIT_MESSAGES_PER_MINUTE="1000")
    menu = await reply_to(telegram, RU_BUYER, "/buy", language_code="ru")
    assert menu.text == (
        "Пополните баланс звёздами Telegram. Каждая звезда добавляет 0,0130\xa0$. Выберите пакет "
        "или отправьте /buy <число>, чтобы купить другое количество (от 1 до 10000 звёзд)."
    )
    assert menu.reply_markup is not None
    labels = [row[0]["text"] for row in menu.reply_markup["inline_keyboard"]]
    assert labels[:2] == ["50 звёзд → 0,65\xa0$", "100 звёзд → 1,30\xa0$"]

    limit = await reply_to(telegram, RU_BUYER, "/limit", language_code="ru")
    assert (limit.text or "").startswith(
        "Дневного лимита нет. Потрачено сегодня (UTC): 0,00\xa0$. Отправьте /limit <сумма в "
    )

    choice = await reply_to(telegram, RU_BUYER, "/language", language_code="ru")
    before = len(telegram.sent(RU_BUYER))
    telegram.push_callback(RU_BUYER, "lang:ru", message_id=choice.message_id or 0)
    await telegram.wait_for_sent(RU_BUYER, before + 1, timeout=20)
    query = telegram.push_pre_checkout(RU_BUYER, 10, "stars:999:10:abc123")
    await telegram.wait_for(lambda: query in telegram.stars.answers, timeout=20)
    answer = telegram.stars.answers[query]
    assert not answer.ok
    assert answer.error_message == (
        "Этот счёт выставлен другому человеку. Отправьте /buy, чтобы получить свой."
    )

    invoices = len(telegram.stars.invoices)
    telegram.push_text(RU_BUYER, "/buy 21", language_code="ru")
    await telegram.wait_for(lambda: len(telegram.stars.invoices) > invoices, timeout=20)
    invoice = telegram.stars.invoices[-1].invoice
    assert invoice["title"] == "Пополнение на 21 звезду"
    assert invoice["description"] == (
        "Добавляет 0,2730\xa0$ на ваш баланс в этом боте (21 звезда Telegram)."
    )
