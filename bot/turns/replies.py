"""What the person is told when a turn does not end in an answer."""

from __future__ import annotations

from bot.i18n import N_, _, format_money
from bot.services.controls import daily_limit_reply
from bot.services.ledger import DailyLimitReached, InsufficientBalance

TIMEOUT_REPLY = N_(
    "Sorry, that took too long and I stopped. Nothing was charged for the unfinished part. Please try again."
)
INTERNAL_ERROR_REPLY = N_(
    "Sorry, something went wrong on my side. Nothing was charged for it. Please try again."
)
EMPTY_REPLY = N_(
    "Your message was empty. Send me some text, a voice message, a photo, a PDF or a text file."
)
UNSUPPORTED_REPLY = N_(
    "I can't handle this kind of message. Send text, a photo, or an image file (JPEG, PNG, WebP or GIF)."
)
GROUP_NO_BALANCE_REPLY = N_(
    "Your balance is too low for this. Open a private chat with me and use /buy to add funds."
)
NO_ANSWER_REPLY = N_("I have no answer to that. Try rephrasing.")
STOPPED_NOTE = N_("\n\n_(Stopped. Nothing was charged.)_")
STOPPED_CHARGED_NOTE = N_("\n\n_(Stopped. {charged} was charged for this answer.)_")
OUTCOME_NOTES = {
    "refused": N_("I can't help with that request."),
    "max_iterations": N_(
        "I stopped here because this request needed too many steps. Tell me how to continue if you want more."
    ),
}
FAILURE_REPLIES = {
    "claude_busy": N_(
        "Claude is busy right now. Please try again in a minute; nothing was charged."
    ),
    "claude_connection": N_(
        "I couldn't reach Claude just now. Please try again in a minute; nothing was charged."
    ),
    "claude_timeout": N_("Claude took too long to answer. Please try again; nothing was charged."),
    "claude_stream_broken": N_(
        "The answer was interrupted by a connection problem. Please try again; nothing was charged."
    ),
    "claude_spend_limit": N_(
        "The assistant is temporarily unavailable. The administrators have been notified; please try again later."
    ),
    "claude_auth": N_("The assistant is temporarily unavailable. Please try again later."),
    "claude_model_gone": N_(
        "The assistant's model is not available right now; the operator has been told. Nothing was charged."
    ),
    "claude_bad_request": N_(
        "Sorry, I couldn't process that message. Try /new to start a fresh conversation."
    ),
}


# The replies above that say "nothing was charged", as said when the turn was charged already.
CHARGED_REPLIES = {
    TIMEOUT_REPLY: N_(
        "Sorry, that took too long and I stopped. {charged} was charged for what was done before that; nothing for the unfinished part. Please try again."
    ),
    INTERNAL_ERROR_REPLY: N_(
        "Sorry, something went wrong on my side. {charged} was charged for what was done before it. Please try again."
    ),
    FAILURE_REPLIES["claude_busy"]: N_(
        "Claude is busy right now. Please try again in a minute; {charged} was charged for what was done before."
    ),
    FAILURE_REPLIES["claude_connection"]: N_(
        "I couldn't reach Claude just now. Please try again in a minute; {charged} was charged for what was done before."
    ),
    FAILURE_REPLIES["claude_timeout"]: N_(
        "Claude took too long to answer. Please try again; {charged} was charged for what was done before."
    ),
    FAILURE_REPLIES["claude_stream_broken"]: N_(
        "The answer was interrupted by a connection problem. Please try again; {charged} was charged for what was done before."
    ),
}


def with_turn_charge(reply: str, charged_micros: int, intake_micros: int) -> str:
    """The reply `reply` (a msgid) translated, saying what the turn was charged: the
    transcription alone, or everything the ledger charged for the turn."""
    if charged_micros > intake_micros and reply in CHARGED_REPLIES:
        return _(CHARGED_REPLIES[reply]).format(charged=format_money(charged_micros))
    if intake_micros:
        return with_intake_charge(_(reply), intake_micros)
    return _(reply)


def with_intake_charge(text: str, charged_micros: int) -> str:
    """A failure reply after a voice message was transcribed: that was charged, so the reply
    says so instead of "nothing was charged"."""
    note = _("only the transcription of your voice message was charged ({price})").format(
        price=format_money(charged_micros)
    )
    for phrase in (_("nothing was charged"), _("Nothing was charged")):
        if phrase in text:
            return text.replace(phrase, note[0].upper() + note[1:] if phrase[0].isupper() else note)
    return _("{text} (The transcription of your voice message cost {price}.)").format(
        text=text, price=format_money(charged_micros)
    )


def stopped_note(charged_micros: int) -> str:
    """What ends an answer the person stopped: what the turn was charged, from the ledger."""
    if charged_micros <= 0:
        return _(STOPPED_NOTE)
    return _(STOPPED_CHARGED_NOTE).format(charged=format_money(charged_micros))


def reply_for_failure(reason: str) -> str:
    """The reply to a failed turn, as its msgid (translated when it is sent)."""
    return FAILURE_REPLIES.get(reason, INTERNAL_ERROR_REPLY)


def insufficient_balance_reply(exc: InsufficientBalance) -> str:
    if isinstance(exc, DailyLimitReached):
        return daily_limit_reply(exc.needed_micros, exc.limit_micros, exc.available_micros)
    return _(
        "Your balance is too low for this: it needs about {needed} "
        "and you have {available} available. "
        "You can top up with Telegram Stars: /buy"
    ).format(needed=format_money(exc.needed_micros), available=format_money(exc.available_micros))
