"""A fake Telegram Bot API server for end-to-end tests and benchmarks.

It speaks the real wire format (aiogram works against it unchanged), enforces Telegram's limits with
Telegram's error bodies, records everything the bot sends, and lets tests push updates and script
failures. It runs in-process on 127.0.0.1 with an ephemeral port, while the bot may run anywhere:

    async with FakeTelegram(token="123456:TEST-fake-token-not-real") as tg:
        bot = Bot(tg.token, session=AiohttpSession(api=TelegramAPIServer.from_base(tg.base_url)))
        tg.push_text(42, "/start")
        [reply] = await tg.wait_for_sent(42, 1)

Construction: ``FakeTelegram(token=..., *, bot_first_name="FakeBot", bot_username="fake_bot",
per_chat_rate=None, global_rate=None, per_chat_burst=3.0, global_burst=None, strict_chats=True,
port=0)``. ``start()`` / ``stop()`` or ``async with``; after ``stop()`` a new ``start()`` binds the same
port again, so a test can take "Telegram" down and bring it back. ``base_url`` is the server root.

Routes: ``POST|GET /bot{token}/{method}`` (names case-insensitive; urlencoded, multipart, JSON or
query bodies; ``attach://name`` resolved) and ``GET /file/bot{token}/{file_path}``. Wrong token -> 401.
Unknown method -> 404 ``Not Found: method not found``.

Methods: getMe, getUpdates (long poll), sendMessage, editMessageText, sendMessageDraft,
sendChatAction, sendPhoto, sendDocument, sendMediaGroup, getFile, deleteMessage, setMyCommands,
getMyCommands, deleteMyCommands, answerCallbackQuery, setWebhook, deleteWebhook, getWebhookInfo,
logOut, close; Stars: sendInvoice, answerPreCheckoutQuery, refundStarPayment, getStarTransactions
(section "Stars").

Webhooks: after ``setWebhook(url, secret_token=..., allowed_updates=..., max_connections=...)`` the
fake POSTs each pending update (JSON) to ``url`` with ``X-Telegram-Bot-Api-Secret-Token``, like
Telegram: one chat's updates one at a time and in order (the next only after a 2xx for the one
before), different chats concurrently up to ``max_connections``; a non-2xx answer or a connection
error is recorded as ``last_error_message`` and the update is sent again after
``webhook_retry_delay`` seconds (an update leaves the queue only with a 2xx). getUpdates answers 409
while a webhook is set; ``deleteWebhook`` stops the deliveries (``drop_pending_updates`` drops the
queue). ``webhook_sets`` records every setWebhook's parameters; ``webhook_deliveries`` every attempt
(update_id, HTTP status or 0 for a connection error, time).

Like the real server, a non-empty ``parse_mode`` wins over ``entities``/``caption_entities`` (the
text is then parsed as HTML/MarkdownV2/Markdown and markup errors give "can't parse entities").
Text limits are counted in UTF-16 code units after parsing. A chat the fake has never seen (no update
pushed from it and not added with ``add_chat``) gives "chat not found" unless ``strict_chats=False``.

Feeding updates (each returns the update_id; ``chat_id`` defaults to ``user_id``, a private chat;
a negative ``chat_id`` is a group):
    push_text(user_id, text, *, chat_id=None, update_id=None, message_id=None, entities=None,
              first_name="Alice", username="alice", language_code="en", forward=False,
              edited=False, reply_to=None)          # "/cmd" gets a bot_command entity
    push_photo(user_id, image_bytes, *, caption=None, caption_entities=None, media_group_id=None,
               file_size=None, width=None, height=None, ...same user/chat options)
    push_document(user_id, data, *, filename, mime_type, caption=None, caption_entities=None,
                  media_group_id=None, file_size=None, ...)
    push_callback(user_id, data, *, message_id, chat_id=None, ...)
    push_update(raw)        # any dict; pushing an update_id again delivers it again
    push_pre_checkout(user_id, stars, payload) -> query id
    push_successful_payment(user_id, stars, payload, *, charge_id=None, deliver=True)
        -> charge id (the payment is also added to the bot's Star transactions; deliver=False
        only adds it there, as when the update was lost)
    refund_outside(user_id, charge_id)   # a refund the bot did not ask for (owner, store)
    add_chat(chat_id, *, first_name=..., username=..., title=..., is_forum=False)
    add_topic(chat_id, message_thread_id)   # a forum topic the bot may send to
    push_text(..., message_thread_id=N)     # in a forum topic (is_topic_message when the chat
                                            # is a forum), as Telegram sends it

Groups (apis-next.md section 2): with ``group_per_minute`` set, at most that many messages per
minute go to each group (negative chat id), else 429 with ``retry_after``. A ``message_thread_id``
on a send to a group must name a topic added with ``add_topic`` (else 400 "message thread not
found", like Telegram for a reply thread or General). With ``privacy=True`` a group message that
is not addressed to the bot (a /cmd@bot, a reply to the bot, or an entity mentioning it) is
dropped before getUpdates, as Telegram does for a bot in privacy mode.

getUpdates: the pending updates (sorted by update_id) are returned at once; otherwise the call waits
up to ``timeout`` seconds and wakes when a test pushes one. Updates already delivered are confirmed
(dropped) when getUpdates is called with a higher offset; a newer getUpdates call ends a waiting one
with 409 Conflict, like Telegram. ``pending_update_ids()`` lists unconfirmed ids.

Recording:
    sent(chat_id, *, include_drafts=False, include_actions=False) -> list[SentItem]
        SentItem: method, chat_id, time (monotonic), message_id, text (as sent), entities,
        parse_mode, caption, photo/document (bytes), filename, mime, draft_id, action,
        media_group_id, reply_markup, file_id, parsed_text (after markup parsing),
        message_thread_id, reply_to_message_id.
        Successful sendMessage, editMessageText, sendPhoto, sendDocument and sendMediaGroup
        (one item per album entry); drafts and chat actions only when asked.
    requests: list[RequestRecord]   (every call, failures included: method, params, files,
                                     time, ok, error_code, description, result, finished)
    calls(method) -> list[RequestRecord]
    get_updates_times: list[float]  (time.monotonic() of each getUpdates call)
    rate_limited_count: int         (429s given by the rate limiter)
    message(chat_id, message_id) -> dict | None   (current state of a message in the chat)
    file_bytes(file_id) -> bytes
    commands(scope=None, language_code="") -> list[dict]

Waiting (event driven, no sleeps):
    await wait_for(predicate, timeout=10)              # predicate over the fake's state
    await wait_for_sent(chat_id, count, timeout=10,
                        methods=("sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup"))
Both raise AssertionError describing what was sent (and recent errors) on timeout.

Failures:
    fail(method, *, error_code, description=None, retry_after=None, times=1, chat_id=None)
    fail_raw(method, *, status, body, times=1, chat_id=None)   # any status and body, as is
    hang(method)                     # accepted, never answered
    answer_polls_at_once()           # getUpdates answers at once, like a server ignoring timeout
queues scripted failures (429 gets "Too Many Requests: retry after N" and parameters.retry_after).
``FakeTelegram(per_chat_rate=1.0, global_rate=30.0)`` turns on Telegram-like flood limits (token
buckets with a small burst) for sends and edits; excess calls get 429 with retry_after >= 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import mimetypes
import re
import struct
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp import BodyPartReader, hdrs, web
from PIL import Image

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
MAX_PHOTO_DIMENSIONS_SUM = 10000
MAX_PHOTO_RATIO = 20
THUMBNAIL_SIDE = 90
MAX_POLL_TIMEOUT = 50

DEFAULT_SENT_METHODS = ("sendMessage", "sendPhoto", "sendDocument", "sendMediaGroup")
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
ENTITY_TYPES = frozenset(
    {
        "mention",
        "hashtag",
        "cashtag",
        "bot_command",
        "url",
        "email",
        "phone_number",
        "bold",
        "italic",
        "underline",
        "strikethrough",
        "spoiler",
        "blockquote",
        "expandable_blockquote",
        "code",
        "pre",
        "text_link",
        "text_mention",
        "custom_emoji",
        "date_time",
    }
)
JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "media",
        "allowed_updates",
        "commands",
        "scope",
        "link_preview_options",
        "reply_parameters",
        "results",
        "options",
        "menu_button",
        "prices",
    }
)
RATE_LIMITED_METHODS = frozenset(
    {"sendmessage", "sendphoto", "senddocument", "sendmediagroup", "editmessagetext"}
)
NON_DEFAULT_UPDATE_TYPES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    413: "Request Entity Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
COMMAND_RE = re.compile(r"/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{1,64})?")
BOT_COMMAND_NAME_RE = re.compile(r"[a-z0-9_]{1,32}")


class TelegramError(Exception):
    """A Bot API error answer: HTTP status = error_code, Telegram's JSON body."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.parameters:
            body["parameters"] = self.parameters
        return body


class RawAnswer(TelegramError):
    """An answer in a shape Telegram never gives (a proxy's error page, a broken result)."""

    def __init__(self, code: int, raw: str) -> None:
        super().__init__(code, f"raw answer: {raw[:100]}")
        self.raw = raw


def bad_request(detail: str) -> TelegramError:
    return TelegramError(400, f"Bad Request: {detail}")


def entities_error(detail: str) -> TelegramError:
    return bad_request(f"can't parse entities: {detail}")


def too_many_requests(retry_after: int) -> TelegramError:
    return TelegramError(
        429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
    )


@dataclass(frozen=True)
class UploadedFile:
    """One multipart file part as the bot uploaded it."""

    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class RequestRecord:
    """One Bot API call and its outcome (ok is None while a long poll is still waiting)."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedFile]
    time: float
    ok: bool | None = None
    error_code: int | None = None
    description: str | None = None
    result: Any = None
    finished: float | None = None


@dataclass
class SentItem:
    """Something the bot successfully sent to a chat (one per album item)."""

    method: str
    chat_id: int
    time: float
    message_id: int | None = None
    text: str | None = None
    entities: list[dict[str, Any]] | None = None
    parse_mode: str | None = None
    caption: str | None = None
    photo: bytes | None = None
    document: bytes | None = None
    filename: str | None = None
    mime: str | None = None
    draft_id: int | None = None
    action: str | None = None
    media_group_id: str | None = None
    reply_markup: dict[str, Any] | None = None
    file_id: str | None = None
    parsed_text: str | None = None
    message_thread_id: int | None = None
    reply_to_message_id: int | None = None


@dataclass
class StoredFile:
    """A file that getFile and the download route can serve."""

    file_id: str
    file_unique_id: str
    path: str
    size: int
    data: bytes | None
    source: bytes | None = None
    box: int = 0

    def content(self) -> bytes:
        if self.data is None:
            self.data = make_thumbnail(self.source or b"", self.box)
        return self.data


@dataclass
class QueuedUpdate:
    update_id: int
    payload: dict[str, Any]
    delivered: bool = False
    posting: bool = False
    retry_at: float = 0.0


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    max_connections: int
    allowed_updates: list[str] | None
    drop_pending_updates: bool


@dataclass
class WebhookDelivery:
    update_id: int
    status: int  # 0: the connection failed
    time: float


_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")


@dataclass
class ScriptedFailure:
    method: str
    error: TelegramError
    remaining: int
    chat_id: int | None


@dataclass
class TokenBucket:
    """Telegram-like flood control: `rate` sends per second with a small burst."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def wait_time(self, cost: float, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        cost = min(cost, self.burst)
        return 0.0 if self.tokens >= cost else (cost - self.tokens) / self.rate

    def take(self, cost: float) -> None:
        self.tokens -= min(cost, self.burst)


@dataclass
class Formatted:
    """Text after entity parsing, as Telegram stores it."""

    text: str
    entities: list[dict[str, Any]]


@dataclass
class PhotoUpload:
    data: bytes
    width: int
    height: int
    mime: str
    filename: str
    existing_sizes: list[dict[str, Any]] | None = None


@dataclass
class DocumentUpload:
    data: bytes
    filename: str
    mime: str
    existing: dict[str, Any] | None = None


@dataclass
class Call:
    """One parsed Bot API request."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedFile]

    def has(self, name: str) -> bool:
        return self.params.get(name) not in (None, "")

    def get_str(self, name: str) -> str | None:
        value = self.params.get(name)
        if value is None:
            return None
        return value if isinstance(value, str) else str(value)

    def get_int(self, name: str) -> int | None:
        value = self.params.get(name)
        if value in (None, ""):
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise bad_request(f"invalid {name} specified")
        try:
            return int(value)
        except ValueError:
            raise bad_request(f"invalid {name} specified") from None

    def get_bool(self, name: str) -> bool:
        value = self.params.get(name)
        if isinstance(value, bool):
            return value
        return str(value).lower() in ("true", "1")

    def chat_id(self) -> int:
        value = self.params.get("chat_id")
        if value in (None, ""):
            raise bad_request("chat_id is empty")
        try:
            return int(str(value))
        except (TypeError, ValueError):
            raise bad_request("chat not found") from None

    def chat_id_or_none(self) -> int | None:
        try:
            return self.chat_id()
        except TelegramError:
            return None


def utf16_slice(text: str, offset: int, length: int) -> str:
    """The part of `text` an entity covers (offsets count UTF-16 code units)."""
    encoded = text.encode("utf-16-le")
    return encoded[2 * offset : 2 * (offset + length)].decode("utf-16-le", errors="replace")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode())


# ---------------------------------------------------------------------------------------------
# Markup parsing (modelled on tdlib's parsers, with the same error texts)
# ---------------------------------------------------------------------------------------------

HTML_TAG_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    "tg-time": "date_time",
}
HTML_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
HTML_ENTITY_RE = re.compile(r"&(?:#(\d{1,7})|#[xX]([0-9a-fA-F]{1,6})|([a-zA-Z]{2,4}));")
HTML_NAME_RE = re.compile(r"[A-Za-z0-9-]*")
HTML_ATTR_NAME_RE = re.compile(r"[A-Za-z0-9_-]*")
SPACES = " \t\r\n"


def decode_html_entity(match: re.Match[str]) -> str | None:
    decimal, hexadecimal, name = match.groups()
    if name is not None:
        return HTML_NAMED_ENTITIES.get(name)
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code)


def html_unescape(value: str) -> str:
    def replace(match: re.Match[str]) -> str:
        decoded = decode_html_entity(match)
        return match.group(0) if decoded is None else decoded

    return HTML_ENTITY_RE.sub(replace, value)


def skip_spaces(text: str, index: int) -> int:
    while index < len(text) and text[index] in SPACES:
        index += 1
    return index


def parse_html_attributes(
    text: str, index: int, tag: str, begin: int
) -> tuple[dict[str, str], int]:
    """Attributes of a start tag; returns them and the index just after '>'."""
    attributes: dict[str, str] = {}
    while True:
        index = skip_spaces(text, index)
        if index >= len(text):
            raise entities_error(f"Unclosed start tag at byte offset {byte_offset(text, begin)}")
        if text[index] == ">":
            return attributes, index + 1
        name_match = HTML_ATTR_NAME_RE.match(text, index)
        name = name_match.group(0).lower() if name_match else ""
        if not name:
            raise entities_error(
                f'Empty attribute name in the tag "{tag}" at byte offset {byte_offset(text, begin)}'
            )
        index = skip_spaces(text, index + len(name))
        if index >= len(text) or text[index] != "=":
            attributes[name] = ""
            continue
        index = skip_spaces(text, index + 1)
        if index < len(text) and text[index] in "'\"":
            end = text.find(text[index], index + 1)
            if end == -1:
                raise entities_error(
                    f"Unclosed start tag at byte offset {byte_offset(text, begin)}"
                )
            attributes[name] = html_unescape(text[index + 1 : end])
            index = end + 1
        else:
            end = index
            while end < len(text) and text[end] not in SPACES + ">":
                end += 1
            attributes[name] = html_unescape(text[index:end])
            index = end


@dataclass
class OpenTag:
    name: str
    start: int
    out_start: int
    attributes: dict[str, str]
    language: str | None = None


def html_tag_entity(tag: OpenTag, end: int, inner: str) -> dict[str, Any] | None:
    length = end - tag.start
    if length <= 0:
        return None
    kind = HTML_TAG_TYPES[tag.name]
    entity: dict[str, Any] = {"type": kind, "offset": tag.start, "length": length}
    if kind == "text_link":
        url = tag.attributes.get("href") or inner
        if not url:
            return None
        entity["url"] = url
    elif kind == "pre" and tag.language:
        entity["language"] = tag.language
    elif kind == "blockquote" and "expandable" in tag.attributes:
        entity["type"] = "expandable_blockquote"
    elif kind == "custom_emoji":
        entity["custom_emoji_id"] = tag.attributes.get("emoji-id", "")
    return entity


def parse_html(text: str) -> Formatted:
    """Telegram's HTML parse mode: plain text plus entities, or a "can't parse entities" error."""
    out: list[str] = []
    position = 0
    stack: list[OpenTag] = []
    entities: list[dict[str, Any]] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "&":
            match = HTML_ENTITY_RE.match(text, index)
            decoded = decode_html_entity(match) if match else None
            if match and decoded is not None:
                out.append(decoded)
                position += utf16_len(decoded)
                index = match.end()
                continue
        if char != "<":
            if char != "\r":
                out.append(char)
                position += 2 if ord(char) > 0xFFFF else 1
            index += 1
            continue
        begin = index
        if text.startswith("</", index):
            index = parse_html_end_tag(text, index, stack)
            tag = stack.pop()
            if tag.name == "code" and stack and stack[-1].name == "pre":
                language = tag.attributes.get("class", "")
                if language.startswith("language-"):
                    stack[-1].language = language.removeprefix("language-")
                    continue
            entity = html_tag_entity(tag, position, "".join(out[tag.out_start :]))
            if entity is not None:
                entities.append(entity)
            continue
        name_match = HTML_NAME_RE.match(text, index + 1)
        name = name_match.group(0).lower() if name_match else ""
        if name not in HTML_TAG_TYPES:
            raise entities_error(
                f'Unsupported start tag "{name}" at byte offset {byte_offset(text, begin)}'
            )
        attributes, index = parse_html_attributes(text, index + 1 + len(name), name, begin)
        if name == "span" and attributes.get("class") != "tg-spoiler":
            raise entities_error(
                f'Tag "span" must have class "tg-spoiler" at byte offset {byte_offset(text, begin)}'
            )
        stack.append(OpenTag(name, position, len(out), attributes))
    if stack:
        raise entities_error(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return Formatted("".join(out), entities)


def parse_html_end_tag(text: str, index: int, stack: list[OpenTag]) -> int:
    """Validates an end tag against the open one; returns the index after '>'."""
    begin = index
    if not stack:
        raise entities_error(f"Unexpected end tag at byte offset {byte_offset(text, begin)}")
    name_match = HTML_NAME_RE.match(text, index + 2)
    name = name_match.group(0).lower() if name_match else ""
    index = skip_spaces(text, index + 2 + len(name))
    if index >= len(text) or text[index] != ">":
        raise entities_error(f"Unclosed end tag at byte offset {byte_offset(text, begin)}")
    if name != stack[-1].name:
        raise entities_error(
            f"Unmatched end tag at byte offset {byte_offset(text, begin)}, "
            f'expected "</{stack[-1].name}>", found "</{name}>"'
        )
    return index + 1


MD2_RESERVED = "_*[]()~`>#+-=|{}.!"
MD2_TYPE_NAMES = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


@dataclass
class OpenMarkup:
    kind: str
    start: int
    byte_start: int
    out_start: int
    language: str | None = None


class MarkdownV2Parser:
    """Telegram's MarkdownV2 parse mode, following tdlib's parser closely."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []
        self.position = 0
        self.stack: list[OpenMarkup] = []
        self.entities: list[dict[str, Any]] = []
        self.quote_start: int | None = None
        self.quote_expandable = False

    def at(self, index: int) -> str:
        return self.text[index] if index < len(self.text) else ""

    def emit(self, char: str) -> None:
        if char == "\r":  # Telegram drops carriage returns from every text
            return
        self.out.append(char)
        self.position += 2 if ord(char) > 0xFFFF else 1

    def in_code(self) -> bool:
        return bool(self.stack) and self.stack[-1].kind in ("code", "pre")

    def parse(self) -> Formatted:
        index = 0
        while index < len(self.text):
            index = self.step(index)
        if self.stack:
            top = self.stack[-1]
            raise entities_error(
                f"Can't find end of {MD2_TYPE_NAMES[top.kind]} entity at byte offset {top.byte_start}"
            )
        self.close_quote()
        self.entities.sort(key=lambda e: (e["offset"], -e["length"]))
        return Formatted("".join(self.out), self.entities)

    def step(self, index: int) -> int:
        text = self.text
        char = text[index]
        if (index == 0 or text[index - 1] == "\n") and not self.in_code():
            marker = self.quote_marker(index)
            if marker:
                return index + marker
            self.close_quote()
        if char == "\\" and 0 < ord(self.at(index + 1) or "\0") <= 126:
            self.emit(text[index + 1])
            return index + 2
        reserved = "`" if self.in_code() else MD2_RESERVED
        if char not in reserved:
            self.emit(char)
            return index + 1
        if self.quote_expandable and self.is_expandable_end(index):
            self.close_quote()
            return index + 2
        if self.stack and self.ends_top(index):
            return self.close_entity(index)
        return self.open_entity(index)

    def quote_marker(self, index: int) -> int:
        if self.text.startswith("**>", index):
            if self.quote_start is None:
                self.quote_start, self.quote_expandable = self.position, True
            return 3
        if self.text[index] == ">":
            if self.quote_start is None:
                self.quote_start, self.quote_expandable = self.position, False
            return 1
        return 0

    def is_expandable_end(self, index: int) -> bool:
        after = self.at(index + 2)
        spoiler_open = any(item.kind == "spoiler" for item in self.stack)
        return self.text.startswith("||", index) and after in ("", "\n") and not spoiler_open

    def close_quote(self) -> None:
        if self.quote_start is None:
            return
        end = self.position
        if self.out and self.out[-1] == "\n":
            end -= 1
        if end > self.quote_start:
            kind = "expandable_blockquote" if self.quote_expandable else "blockquote"
            self.entities.append(
                {"type": kind, "offset": self.quote_start, "length": end - self.quote_start}
            )
        self.quote_start, self.quote_expandable = None, False

    def ends_top(self, index: int) -> bool:
        char, following = self.text[index], self.at(index + 1)
        return {
            "bold": char == "*",
            "italic": char == "_" and following != "_",
            "code": char == "`",
            "pre": self.text.startswith("```", index),
            "text_link": char == "]",
            "custom_emoji": char == "]",
            "underline": self.text.startswith("__", index),
            "strikethrough": char == "~",
            "spoiler": self.text.startswith("||", index),
        }[self.stack[-1].kind]

    def reserved_error(self, char: str) -> TelegramError:
        return entities_error(
            f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
        )

    def open_entity(self, index: int) -> int:
        text, char = self.text, self.text[index]
        start = OpenMarkup("", self.position, byte_offset(text, index), len(self.out))
        simple = {"*": "bold", "~": "strikethrough", "[": "text_link"}
        if char in simple:
            start.kind, index = simple[char], index + 1
        elif char == "_":
            underline = text.startswith("__", index)
            start.kind, index = ("underline", index + 2) if underline else ("italic", index + 1)
        elif text.startswith("||", index):
            start.kind, index = "spoiler", index + 2
        elif text.startswith("![", index):
            start.kind, index = "custom_emoji", index + 2
        elif text.startswith("```", index):
            start.kind, index = "pre", self.open_pre(start, index + 3)
        elif char == "`":
            start.kind, index = "code", index + 1
        else:
            raise self.reserved_error(char)
        self.stack.append(start)
        return index

    def open_pre(self, start: OpenMarkup, index: int) -> int:
        text = self.text
        end = index
        while end < len(text) and text[end] not in SPACES and text[end] != "`":
            end += 1
        if end != index and end < len(text) and text[end] != "`":
            start.language = text[index:end]
            index = end
        if self.at(index) in ("\n", "\r"):
            pair = self.at(index + 1) in ("\n", "\r") and self.at(index) != self.at(index + 1)
            index += 2 if pair else 1
        return index

    def close_entity(self, index: int) -> int:
        top = self.stack.pop()
        entity: dict[str, Any] = {"type": top.kind, "offset": top.start}
        if top.kind in ("underline", "spoiler"):
            index += 2
        elif top.kind == "pre":
            index += 3
            if top.language:
                entity["language"] = top.language
        elif top.kind in ("text_link", "custom_emoji"):
            index, url = self.read_url(index + 1, top)
            if top.kind == "text_link":
                entity["url"] = url
            else:
                entity["custom_emoji_id"] = url.rsplit("=", 1)[-1]
        else:
            index += 1
        entity["length"] = self.position - top.start
        if top.kind == "pre" and len(self.out) > top.out_start and self.out[-1] == "\n":
            entity["length"] -= 1  # the code block itself ends before the closing fence's line
        if entity["length"] > 0 and (top.kind != "text_link" or entity["url"]):
            self.entities.append(entity)
        return index

    def read_url(self, index: int, top: OpenMarkup) -> tuple[int, str]:
        text = self.text
        if self.at(index) != "(":
            return index, "".join(self.out[top.out_start :])
        index += 1
        begin = index
        url: list[str] = []
        while index < len(text) and text[index] != ")":
            if text[index] == "\\" and 0 < ord(self.at(index + 1) or "\0") <= 126:
                url.append(text[index + 1])
                index += 2
                continue
            url.append(text[index])
            index += 1
        if index >= len(text):
            raise entities_error(
                f"Can't find end of a URL at byte offset {byte_offset(text, begin)}"
            )
        return index + 1, "".join(url)


def parse_markdown_legacy(text: str) -> Formatted:
    """Telegram's legacy Markdown parse mode."""
    out: list[str] = []
    position = 0
    entities: list[dict[str, Any]] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "_*`[":
            out.append(text[index + 1])
            position += 1
            index += 2
            continue
        if char not in "_*`[":
            out.append(char)
            position += 2 if ord(char) > 0xFFFF else 1
            index += 1
            continue
        marker = "```" if text.startswith("```", index) else ("]" if char == "[" else char)
        start = index + (3 if marker == "```" else 1)
        end = text.find(marker, start)
        if end == -1:
            raise entities_error(
                f"Can't find end of the entity starting at byte offset {byte_offset(text, index)}"
            )
        inner = text[start:end]
        entity: dict[str, Any] = {"offset": position, "length": utf16_len(inner)}
        index = end + len(marker)
        if marker == "]":
            entity["type"] = "text_link"
            if text.startswith("(", index) and (close := text.find(")", index)) != -1:
                entity["url"] = text[index + 1 : close]
                index = close + 1
            else:
                entity["url"] = inner
        else:
            entity["type"] = {"_": "italic", "*": "bold", "`": "code", "```": "pre"}[marker]
        out.append(inner)
        position += entity["length"]
        if entity["length"] > 0:
            entities.append(entity)
    return Formatted("".join(out), entities)


def check_entities(raw: Any, text: str) -> list[dict[str, Any]]:
    """Explicit entities must be well-formed and lie inside the text (UTF-16 offsets)."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise bad_request("can't parse entities JSON object")
    size = utf16_len(text)
    checked: list[dict[str, Any]] = []
    for entity in raw:
        if not isinstance(entity, dict) or entity.get("type") not in ENTITY_TYPES:
            raise entities_error(f"unsupported entity {json.dumps(entity)}")
        offset, length = entity.get("offset"), entity.get("length")
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise entities_error(f"entity offset and length must be non-negative: {entity}")
        if offset + length > size:
            raise entities_error(
                f"entity {entity['type']} at offset {offset} with length {length} ends beyond "
                f"the end of the text ({size} UTF-16 code units)"
            )
        if entity["type"] == "text_link" and not entity.get("url"):
            raise entities_error("text_link entity must have a URL")
        if length > 0:
            checked.append(entity)
    return checked


def format_text(text: str, parse_mode: str | None, entities: Any) -> Formatted:
    """What Telegram does with text + parse_mode / entities (a non-empty parse_mode wins)."""
    mode = (parse_mode or "").lower()
    if text and mode not in ("", "none"):
        if mode == "html":
            return trim_trailing_space(parse_html(text))
        if mode == "markdownv2":
            return trim_trailing_space(MarkdownV2Parser(text).parse())
        if mode == "markdown":
            return trim_trailing_space(parse_markdown_legacy(text))
        raise bad_request("unsupported parse_mode")
    return trim_trailing_space(Formatted(text, check_entities(entities, text)))


def trim_trailing_space(formatted: Formatted) -> Formatted:
    """Telegram drops trailing whitespace and clips the entities that reached into it."""
    text = formatted.text.rstrip()
    if text == formatted.text:
        return formatted
    size = utf16_len(text)
    entities = []
    for entity in formatted.entities:
        length = min(entity["length"], size - entity["offset"])
        if length > 0:
            entities.append({**entity, "length": length})
    return Formatted(text, entities)


def command_entities(text: str) -> list[dict[str, Any]]:
    match = COMMAND_RE.match(text)
    if match is None:
        return []
    return [{"type": "bot_command", "offset": 0, "length": utf16_len(match.group(0))}]


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


UPLOAD_READ_CHUNK = 1024 * 1024


def png_dimensions(data: bytes) -> tuple[int, int] | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    return None


def image_info(data: bytes) -> tuple[int, int, str] | None:
    """(width, height, mime) from the image header, or None when it is not an image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                mime = Image.MIME.get(image.format or "", "image/jpeg")
                return image.width, image.height, mime
    except Image.DecompressionBombError:
        size = png_dimensions(data)
        return (size[0], size[1], "image/png") if size else None
    except (OSError, ValueError, SyntaxError, struct.error):
        return None


def scaled(width: int, height: int, side: int) -> tuple[int, int]:
    factor = side / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def make_thumbnail(data: bytes, side: int) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (side, side))
                copy = image.convert("RGB")
        copy.thumbnail((side, side))
        buffer = io.BytesIO()
        copy.save(buffer, format="JPEG", quality=80)
        return buffer.getvalue()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return b""


def check_photo_dimensions(width: int, height: int) -> None:
    too_big = width + height > MAX_PHOTO_DIMENSIONS_SUM
    too_thin = max(width, height) > MAX_PHOTO_RATIO * min(width, height)
    if width <= 0 or height <= 0 or too_big or too_thin:
        raise bad_request("PHOTO_INVALID_DIMENSIONS")


def check_reply_markup(markup: Any) -> dict[str, Any] | None:
    if markup in (None, ""):
        return None
    keys = ("inline_keyboard", "keyboard", "remove_keyboard", "force_reply")
    if not isinstance(markup, dict) or not any(key in markup for key in keys):
        raise bad_request("can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise bad_request("BUTTON_DATA_INVALID")
            if not button.get("text"):
                raise bad_request("BUTTON_TEXT_INVALID")
    return markup


def decode_json_fields(params: dict[str, Any]) -> None:
    for name in JSON_FIELDS & params.keys():
        value = params[name]
        if isinstance(value, str):
            try:
                params[name] = json.loads(value)
            except json.JSONDecodeError:
                raise bad_request(f"can't parse {name} JSON object") from None


async def read_call(request: web.Request, method: str) -> Call:
    """Query, urlencoded, JSON or multipart parameters; files keyed by their part name."""
    params: dict[str, Any] = dict(request.query)
    files: dict[str, UploadedFile] = {}
    if request.body_exists:
        content_type = request.content_type
        if content_type.startswith("multipart/"):
            await read_multipart(request, params, files)
        elif content_type == "application/json":
            try:
                body = await request.json()
            except json.JSONDecodeError:
                raise bad_request("can't parse JSON request body") from None
            if not isinstance(body, dict):
                raise bad_request("request body must be a JSON object")
            params.update(body)
        else:
            form = await request.post()
            params.update({key: value for key, value in form.items() if isinstance(value, str)})
    decode_json_fields(params)
    return Call(method, params, files)


async def read_multipart(
    request: web.Request, params: dict[str, Any], files: dict[str, UploadedFile]
) -> None:
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise bad_request("nested multipart bodies are not supported")
        data = await _read_part(part)
        name = part.name or ""
        if part.filename is None:
            params[name] = data.decode()
        else:
            content_type = part.headers.get(hdrs.CONTENT_TYPE, "application/octet-stream")
            files[name] = UploadedFile(name, part.filename, content_type, data)


async def _read_part(part: BodyPartReader) -> bytes:
    """The part's bytes. Read in pieces larger than aiohttp's 8 KB default (a 28 MB upload in 27
    reads, not 3,400) and joined on a thread: joining copies into fresh memory (about 15 ms for
    28 MB), and this process's other fake servers answer the bot meanwhile, time the benchmark
    would count as the bot's. A part with a transfer or content encoding is decoded by aiohttp."""
    if part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING) or part.headers.get(hdrs.CONTENT_ENCODING):
        return bytes(await part.read(decode=True))
    pieces = []
    while chunk := await part.read_chunk(UPLOAD_READ_CHUNK):
        pieces.append(chunk)
    if sum(len(piece) for piece in pieces) < UPLOAD_READ_CHUNK:
        return b"".join(pieces)
    return await asyncio.to_thread(b"".join, pieces)


def _chat_key(queued: QueuedUpdate) -> object:
    """Updates of one chat are delivered one at a time, in order; others each on their own."""
    for value in queued.payload.values():
        if not isinstance(value, dict):
            continue
        chat = value.get("chat") or (value.get("message") or {}).get("chat")
        if isinstance(chat, dict) and "id" in chat:
            return ("chat", chat["id"])
        sender = value.get("from")
        if isinstance(sender, dict) and "id" in sender:
            return ("user", sender["id"])
    return ("update", queued.update_id)


def error_response(error: TelegramError) -> web.Response:
    if isinstance(error, RawAnswer):
        return web.Response(status=error.code, text=error.raw, content_type="application/json")
    return web.json_response(error.body(), status=error.code)


Handler = Callable[[Call], Awaitable[Any]]


PRE_CHECKOUT_TIMEOUT = 10.0
MAX_INVOICE_PAYLOAD_BYTES = 128
MAX_STARS_PER_INVOICE = 10000


@dataclass
class SentInvoice:
    chat_id: int
    message_id: int
    invoice: dict[str, Any]
    payload: str


@dataclass
class PreCheckoutAnswer:
    ok: bool
    error_message: str | None
    seconds: float


@dataclass
class FakeStars:
    """The bot's Stars account as the fake keeps it.

    `charges` by telegram_payment_charge_id; `transactions` in Telegram's StarTransaction shape,
    chronological (an incoming payment has a `source`, a refund a `receiver` and the same id);
    `stall_refunds` = "before" | "after" makes refundStarPayment hang before or after the refund
    is made (to kill the bot in between), until `released` is set."""

    invoices: list[SentInvoice] = field(default_factory=list)
    queries: dict[str, float] = field(default_factory=dict)
    answers: dict[str, PreCheckoutAnswer] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: list[dict[str, Any]] = field(default_factory=list)
    refund_calls: int = 0
    stall_refunds: str | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)
    serial: int = 0

    def pay(self, charge_id: str, user: dict[str, Any], stars: int, payload: str) -> None:
        self.charges[charge_id] = {
            "user_id": user["id"],
            "user": user,
            "stars": stars,
            "payload": payload,
            "refunded": False,
        }
        self.transactions.append(
            {
                "id": charge_id,
                "amount": stars,
                "date": int(time.time()),
                "source": {
                    "type": "user",
                    "transaction_type": "invoice_payment",
                    "user": user,
                    "invoice_payload": payload,
                },
            }
        )

    def refund(self, charge_id: str) -> None:
        charge = self.charges[charge_id]
        if charge["refunded"]:
            raise ValueError(f"{charge_id} is already refunded")
        charge["refunded"] = True
        self.transactions.append(
            {
                "id": charge_id,
                "amount": charge["stars"],
                "date": int(time.time()),
                "receiver": {
                    "type": "user",
                    "transaction_type": "invoice_payment",
                    "user": charge["user"],
                    "invoice_payload": charge["payload"],
                },
            }
        )

    def refunded(self, charge_id: str) -> bool:
        return bool(self.charges[charge_id]["refunded"])


def check_invoice(call: Call) -> dict[str, Any]:
    """sendInvoice's checks for a Stars invoice, with Telegram's error descriptions."""
    title = call.get_str("title") or ""
    description = call.get_str("description") or ""
    payload = call.get_str("payload") or ""
    if not 1 <= len(title) <= 32:
        raise bad_request("INVOICE_TITLE_EMPTY" if not title else "INVOICE_TITLE_INVALID")
    if not 1 <= len(description) <= 255:
        raise bad_request("INVOICE_DESCRIPTION_INVALID")
    if not 1 <= len(payload.encode()) <= MAX_INVOICE_PAYLOAD_BYTES:
        raise bad_request("INVOICE_PAYLOAD_INVALID")
    if call.get_str("currency") != "XTR":
        raise bad_request("CURRENCY_INVALID")  # digital goods are sold in Stars only
    if call.get_str("provider_token"):
        raise bad_request("PAYMENT_PROVIDER_INVALID")  # Stars take no provider token
    prices = call.params.get("prices")
    if not isinstance(prices, list) or len(prices) != 1:
        raise bad_request("STARS_INVOICE_INVALID")  # exactly one price in XTR
    amount = prices[0].get("amount") if isinstance(prices[0], dict) else None
    label = prices[0].get("label") if isinstance(prices[0], dict) else None
    if not isinstance(label, str) or not label:
        raise bad_request("LABELED_PRICE_INVALID")
    if not isinstance(amount, int) or not 1 <= amount <= MAX_STARS_PER_INVOICE:
        raise bad_request("CURRENCY_TOTAL_AMOUNT_INVALID")
    return {
        "title": title,
        "description": description,
        "start_parameter": call.get_str("start_parameter") or "",
        "currency": "XTR",
        "total_amount": amount,
    }


class FakeTelegram:
    """The fake Bot API server; see the module docstring for the test-facing API."""

    def __init__(
        self,
        token: str = "123456:TEST-fake-token-not-real",
        *,
        bot_first_name: str = "FakeBot",
        bot_username: str = "fake_bot",
        per_chat_rate: float | None = None,
        global_rate: float | None = None,
        per_chat_burst: float = 3.0,
        global_burst: float | None = None,
        strict_chats: bool = True,
        port: int = 0,
        group_per_minute: int | None = None,
        privacy: bool = False,
    ) -> None:
        self.token = token
        self.group_per_minute = group_per_minute
        self.privacy = privacy
        self._group_sends: dict[int, list[float]] = {}
        self._topics: set[tuple[int, int]] = set()
        self.dropped_by_privacy = 0
        bot_id = int(token.split(":", 1)[0]) if token.split(":", 1)[0].isdigit() else 123456
        self.bot_user: dict[str, Any] = {
            "id": bot_id,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.per_chat_rate = per_chat_rate
        self.global_rate = global_rate
        self.per_chat_burst = per_chat_burst
        self.global_burst = global_burst if global_burst is not None else (global_rate or 1.0)
        self.strict_chats = strict_chats
        self.port = port
        self.requests: list[RequestRecord] = []
        self.get_updates_times: list[float] = []
        self.rate_limited_count = 0
        self._sent: dict[int, list[SentItem]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        # People seen only in groups: they never started the bot, so it cannot message them.
        self._not_started: set[int] = set()
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._last_message_id: dict[int, int] = {}
        self._updates: list[QueuedUpdate] = []
        self._last_update_id = 100000
        self._allowed_updates: frozenset[str] | None = None
        self._poll_serial = 0
        self._failures: list[ScriptedFailure] = []
        self._files: dict[str, StoredFile] = {}
        self._paths: dict[str, StoredFile] = {}
        self._photo_sets: dict[str, list[dict[str, Any]]] = {}
        self._documents: dict[str, dict[str, Any]] = {}
        self._file_serial = 0
        self._media_group_serial = 13000000000000000
        self._callback_serial = 0
        self._callback_ids: set[str] = set()
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._chat_buckets: dict[int, TokenBucket] = {}
        self._global_bucket: TokenBucket | None = None
        self.stars = FakeStars()
        self._changed = asyncio.Event()
        self._closing = False
        self._hanging: set[str] = set()
        # A server that ignores getUpdates' timeout and answers an empty list at once.
        self.ignore_poll_timeout = False
        self._runner: web.AppRunner | None = None
        self.webhook: Webhook | None = None
        self.webhook_sets: list[Webhook] = []
        self.webhook_deliveries: list[WebhookDelivery] = []
        self.webhook_retry_delay = 0.2
        self.webhook_timeout = 60.0
        self._webhook_error: tuple[int, str] | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self._methods: dict[str, tuple[str, Handler]] = {
            name.lower(): (name, handler) for name, handler in self._handlers().items()
        }

    def _handlers(self) -> dict[str, Handler]:
        return {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "sendMessageDraft": self._send_message_draft,
            "sendChatAction": self._send_chat_action,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendMediaGroup": self._send_media_group,
            "getFile": self._get_file,
            "deleteMessage": self._delete_message,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
            "answerCallbackQuery": self._answer_callback_query,
            "sendInvoice": self._send_invoice,
            "answerPreCheckoutQuery": self._answer_pre_checkout_query,
            "refundStarPayment": self._refund_star_payment,
            "getStarTransactions": self._get_star_transactions,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "logOut": self._return_true,
            "close": self._return_true,
        }

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES * 2)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner
        self._closing = False

    async def stop(self) -> None:
        self._closing = True
        self._notify()
        await self._stop_webhook_delivery()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- HTTP layer -----------------------------------------------------------------------------

    async def _handle_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return error_response(TelegramError(401, "Unauthorized"))
        name, handler = self._methods.get(request.match_info["method"].lower(), ("", None))
        record = RequestRecord(request.match_info["method"], {}, {}, time.monotonic())
        self.requests.append(record)
        try:
            if handler is None:
                raise TelegramError(404, "Not Found: method not found")
            call = await read_call(request, name)
            record.method, record.params, record.files = name, call.params, call.files
            self._notify()
            if name.lower() in self._hanging:
                await asyncio.Event().wait()  # accepted, never answered (ends when the fake stops)
            self._raise_scripted_failure(call)
            self._check_started(call)
            self._check_thread(call)
            self._enforce_rate_limit(call)
            self._enforce_group_limit(call)
            result = await handler(call)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            error = bad_request(f"the fake could not understand the request: {exc!r}")
            self._finish(record, ok=False, error=error)
            return error_response(error)
        except TelegramError as error:
            self._finish(record, ok=False, error=error)
            return error_response(error)
        self._finish(record, ok=True, result=result)
        return web.json_response({"ok": True, "result": result})

    def _finish(
        self,
        record: RequestRecord,
        *,
        ok: bool,
        result: Any = None,
        error: TelegramError | None = None,
    ) -> None:
        record.ok, record.result, record.finished = ok, result, time.monotonic()
        if error is not None:
            record.error_code, record.description = error.code, error.description
        self._notify()

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return error_response(TelegramError(401, "Unauthorized"))
        stored = self._paths.get(request.match_info["path"])
        if stored is None:
            return error_response(TelegramError(404, "Not Found"))
        return web.Response(body=stored.content(), content_type="application/octet-stream")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float) -> None:
        event = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    # -- failures and flood control -------------------------------------------------------------

    def fail(
        self,
        method: str,
        *,
        error_code: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | None = None,
    ) -> None:
        """The next `times` calls of `method` (to `chat_id`, if given) fail with this error."""
        if error_code == 429 and retry_after is None:
            retry_after = 1
        if description is None:
            description = (
                f"Too Many Requests: retry after {retry_after}"
                if error_code == 429
                else DEFAULT_DESCRIPTIONS.get(error_code, "Bad Request")
            )
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        error = TelegramError(error_code, description, parameters)
        self._failures.append(ScriptedFailure(method.lower(), error, times, chat_id))

    def fail_raw(
        self, method: str, *, status: int, body: str, times: int = 1, chat_id: int | None = None
    ) -> None:
        """The next `times` calls of `method` get HTTP `status` with `body` as is: shapes the real
        API never sends, such as `{"message": "..."}` with 500, or a result that is not a Message."""
        self._failures.append(
            ScriptedFailure(method.lower(), RawAnswer(status, body), times, chat_id)
        )

    def answer_polls_at_once(self) -> None:
        """From now on (the poll waiting now included) getUpdates answers at once, as a server
        that ignores `timeout` does."""
        self.ignore_poll_timeout = True
        self._notify()

    def hang(self, method: str) -> None:
        """Calls of `method` are accepted and never answered."""
        self._hanging.add(method.lower())

    def clear_failures(self) -> None:
        self._failures.clear()

    def _raise_scripted_failure(self, call: Call) -> None:
        for failure in self._failures:
            wrong_chat = failure.chat_id is not None and failure.chat_id != call.chat_id_or_none()
            if failure.method != call.method.lower() or wrong_chat:
                continue
            failure.remaining -= 1
            if failure.remaining <= 0:
                self._failures.remove(failure)
            raise failure.error

    def _enforce_rate_limit(self, call: Call) -> None:
        if call.method.lower() not in RATE_LIMITED_METHODS:
            return
        chat_id = call.chat_id_or_none()
        cost = float(len(call.params.get("media") or []) or 1)
        now = time.monotonic()
        buckets = [
            bucket for bucket in (self._chat_bucket(chat_id, now), self._global(now)) if bucket
        ]
        wait = max((bucket.wait_time(cost, now) for bucket in buckets), default=0.0)
        if wait > 0:
            self.rate_limited_count += 1
            raise too_many_requests(max(1, math.ceil(wait)))
        for bucket in buckets:
            bucket.take(cost)

    def _check_started(self, call: Call) -> None:
        """Telegram's answer for a private chat with someone who never started the bot."""
        if call.chat_id_or_none() in self._not_started:
            raise TelegramError(403, "Forbidden: bot can't initiate conversation with a user")

    def never_started(self, user_id: int) -> None:
        """`user_id` has no private chat with the bot (as after writing only in groups)."""
        self._not_started.add(user_id)
        self._chats.pop(user_id, None)

    def _check_thread(self, call: Call) -> None:
        thread = call.get_int("message_thread_id")
        chat_id = call.chat_id_or_none()
        if thread is None or chat_id is None or chat_id > 0:
            return
        if (chat_id, thread) not in self._topics:
            raise bad_request("message thread not found")

    def _enforce_group_limit(self, call: Call) -> None:
        """At most `group_per_minute` messages in any minute to one group."""
        chat_id = call.chat_id_or_none()
        if self.group_per_minute is None or chat_id is None or chat_id > 0:
            return
        if call.method.lower() not in RATE_LIMITED_METHODS:
            return
        now = time.monotonic()
        recent = [t for t in self._group_sends.get(chat_id, []) if now - t < 60.0]
        if len(recent) >= self.group_per_minute:
            self.rate_limited_count += 1
            self._group_sends[chat_id] = recent
            raise too_many_requests(max(1, math.ceil(60.0 - (now - recent[0]))))
        recent.append(now)
        self._group_sends[chat_id] = recent

    def group_sends_in_any_minute(self, chat_id: int) -> int:
        """The most messages the bot sent to `chat_id` within any 60 seconds."""
        times = sorted(i.time for i in self._sent.get(chat_id, []) if i.method != "sendChatAction")
        return max((sum(1 for u in times if t <= u < t + 60.0) for t in times), default=0)

    def _chat_bucket(self, chat_id: int | None, now: float) -> TokenBucket | None:
        if self.per_chat_rate is None or chat_id is None:
            return None
        if chat_id not in self._chat_buckets:
            burst = self.per_chat_burst
            self._chat_buckets[chat_id] = TokenBucket(self.per_chat_rate, burst, burst, now)
        return self._chat_buckets[chat_id]

    def _global(self, now: float) -> TokenBucket | None:
        if self.global_rate is None:
            return None
        if self._global_bucket is None:
            burst = self.global_burst
            self._global_bucket = TokenBucket(self.global_rate, burst, burst, now)
        return self._global_bucket

    # -- chats, users, messages -----------------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        *,
        first_name: str = "Alice",
        username: str | None = "alice",
        title: str = "Fake Group",
        is_forum: bool = False,
    ) -> dict[str, Any]:
        """Makes a chat known to the fake (pushing an update from it does this too)."""
        if chat_id > 0:
            chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
            if username:
                chat["username"] = username
        else:
            kind = "supergroup" if str(chat_id).startswith("-100") else "group"
            chat = {"id": chat_id, "type": kind, "title": title}
            if is_forum and kind == "supergroup":
                chat["is_forum"] = True
        self._chats.setdefault(chat_id, chat)
        return self._chats[chat_id]

    def add_topic(self, chat_id: int, message_thread_id: int) -> None:
        """A forum topic of a forum supergroup (added with `add_chat(..., is_forum=True)`)."""
        self._topics.add((chat_id, message_thread_id))

    def _chat(self, chat_id: int) -> dict[str, Any]:
        chat = self._chats.get(chat_id)
        if chat is None:
            if self.strict_chats:
                raise bad_request("chat not found")
            chat = self.add_chat(chat_id)
        return chat

    def _user(
        self, user_id: int, first_name: str, username: str | None, language_code: str | None
    ) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        self._users[user_id] = user
        return user

    def _next_message_id(self, chat_id: int, wanted: int | None = None) -> int:
        message_id = wanted if wanted is not None else self._last_message_id.get(chat_id, 0) + 1
        self._last_message_id[chat_id] = max(message_id, self._last_message_id.get(chat_id, 0))
        return message_id

    def message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        return self._messages.get((chat_id, message_id))

    def _store_bot_message(self, chat: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
        message_id = self._next_message_id(chat["id"])
        message = {
            "message_id": message_id,
            "from": self.bot_user,
            "chat": chat,
            "date": int(time.time()),
            **content,
        }
        self._messages[(chat["id"], message_id)] = message
        return message

    def _reply_to(self, call: Call, chat_id: int) -> dict[str, Any]:
        parameters = call.params.get("reply_parameters")
        message_id = call.get_int("reply_to_message_id")
        allow_missing = call.get_bool("allow_sending_without_reply")
        if isinstance(parameters, dict):
            message_id = parameters.get("message_id")
            allow_missing = bool(parameters.get("allow_sending_without_reply"))
        if message_id is None:
            return {}
        original = self._messages.get((chat_id, int(message_id)))
        if original is None:
            if allow_missing:
                return {}
            raise bad_request("message to be replied not found")
        return {"reply_to_message": {k: v for k, v in original.items() if k != "reply_to_message"}}

    def _record_sent(self, item: SentItem) -> None:
        self._sent.setdefault(item.chat_id, []).append(item)

    # -- files ----------------------------------------------------------------------------------

    def _new_file(
        self, kind: str, extension: str, data: bytes | None, size: int, **lazy: Any
    ) -> StoredFile:
        self._file_serial += 1
        serial = self._file_serial
        prefix = {
            "photo": "AgACAgIAAxkBAAI",
            "document": "BQACAgIAAxkBAAI",
            "voice": "AwACAgIAAxkBAAI",
            "audio": "CQACAgIAAxkBAAI",
        }[kind]
        folder = {"photo": "photos", "document": "documents", "voice": "voice", "audio": "music"}[
            kind
        ]
        stored = StoredFile(
            file_id=f"{prefix}{serial:06d}FakeFileId",
            file_unique_id=f"AQAD{serial:06d}",
            path=f"{folder}/file_{serial}{extension}",
            size=size,
            data=data,
            **lazy,
        )
        self._files[stored.file_id] = stored
        self._paths[stored.path] = stored
        return stored

    def _store_photo(
        self, data: bytes, width: int, height: int, size: int | None = None
    ) -> list[dict[str, Any]]:
        sizes: list[dict[str, Any]] = []
        if max(width, height) > THUMBNAIL_SIDE:
            thumb_width, thumb_height = scaled(width, height, THUMBNAIL_SIDE)
            thumb = self._new_file("photo", ".jpg", None, 0, source=data, box=THUMBNAIL_SIDE)
            sizes.append(
                {
                    "file_id": thumb.file_id,
                    "file_unique_id": thumb.file_unique_id,
                    "width": thumb_width,
                    "height": thumb_height,
                }
            )
        original = self._new_file("photo", ".jpg", data, size if size is not None else len(data))
        sizes.append(
            {
                "file_id": original.file_id,
                "file_unique_id": original.file_unique_id,
                "width": width,
                "height": height,
                "file_size": original.size,
            }
        )
        for entry in sizes:
            self._photo_sets[entry["file_id"]] = sizes
        return sizes

    def _store_document(
        self, data: bytes, filename: str, mime: str, size: int | None = None
    ) -> dict[str, Any]:
        extension = mimetypes.guess_extension(mime) or ""
        if "." in filename:
            extension = "." + filename.rsplit(".", 1)[1]
        stored = self._new_file(
            "document", extension, data, size if size is not None else len(data)
        )
        document = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_name": filename,
            "mime_type": mime,
            "file_size": stored.size,
        }
        self._documents[stored.file_id] = document
        return document

    def file_bytes(self, file_id: str) -> bytes:
        return self._files[file_id].content()

    def _input_file(self, call: Call, value: Any, field_name: str) -> UploadedFile | str:
        """An uploaded part (direct or attach://), or a file_id / URL string."""
        if value in (None, "") and field_name in call.files:
            return call.files[field_name]
        if not isinstance(value, str) or not value:
            raise bad_request(f"there is no {field_name} in the request")
        if value.startswith("attach://"):
            uploaded = call.files.get(value.removeprefix("attach://"))
            if uploaded is None:
                raise bad_request("wrong HTTP URL specified")
            return uploaded
        if value.startswith(("http://", "https://")):
            raise bad_request("failed to get HTTP URL content")
        return value

    def _prepare_photo(self, call: Call, value: Any, field_name: str = "photo") -> PhotoUpload:
        source = self._input_file(call, value, field_name)
        if isinstance(source, str):
            sizes = self._photo_sets.get(source)
            if sizes is None:
                if source in self._documents:
                    raise bad_request("can't use file of type Document as Photo")
                raise bad_request("wrong file identifier/HTTP URL specified")
            largest = sizes[-1]
            data = self._files[largest["file_id"]].content()
            return PhotoUpload(data, largest["width"], largest["height"], "image/jpeg", "", sizes)
        if len(source.data) > MAX_PHOTO_BYTES:
            raise TelegramError(413, "Request Entity Too Large")
        info = image_info(source.data)
        if info is None:
            raise bad_request("IMAGE_PROCESS_FAILED")
        width, height, mime = info
        check_photo_dimensions(width, height)
        return PhotoUpload(source.data, width, height, mime, source.filename)

    def _prepare_document(
        self, call: Call, value: Any, field_name: str = "document"
    ) -> DocumentUpload:
        source = self._input_file(call, value, field_name)
        if isinstance(source, str):
            document = self._documents.get(source)
            if document is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
            data = self._files[source].content()
            return DocumentUpload(data, document["file_name"], document["mime_type"], document)
        if not source.data:
            raise bad_request("file must be non-empty")
        if len(source.data) > MAX_UPLOAD_BYTES:
            raise TelegramError(413, "Request Entity Too Large")
        guessed, _ = mimetypes.guess_type(source.filename)
        mime = guessed or "application/octet-stream"
        return DocumentUpload(source.data, source.filename, mime)

    # -- getMe, webhook, lifecycle methods ------------------------------------------------------

    async def _get_me(self, call: Call) -> dict[str, Any]:
        return {
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _return_true(self, call: Call) -> bool:
        return True

    async def _delete_webhook(self, call: Call) -> bool:
        if call.get_bool("drop_pending_updates"):
            self._updates.clear()
        self.webhook = None
        await self._stop_webhook_delivery()
        return True

    async def _get_webhook_info(self, call: Call) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self.webhook.url if self.webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook is not None:
            info["max_connections"] = self.webhook.max_connections
            if self.webhook.allowed_updates is not None:
                info["allowed_updates"] = self.webhook.allowed_updates
        if self._webhook_error is not None:
            info["last_error_date"], info["last_error_message"] = self._webhook_error
        return info

    # -- webhooks -------------------------------------------------------------------------------

    async def _set_webhook(self, call: Call) -> bool:
        url = call.get_str("url") or ""
        if not url:
            return await self._delete_webhook(call)
        if not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        secret = call.get_str("secret_token")
        if secret is not None and not _SECRET_TOKEN.fullmatch(secret):
            raise bad_request("secret token contains unallowed characters")
        max_connections = call.get_int("max_connections") or 40
        if not 1 <= max_connections <= 100:
            raise bad_request("bad webhook: max_connections must be between 1 and 100")
        allowed = call.params.get("allowed_updates")
        self._set_allowed_updates(allowed)
        if call.get_bool("drop_pending_updates"):
            self._updates.clear()
        self.webhook = Webhook(
            url=url,
            secret_token=secret,
            max_connections=max_connections,
            allowed_updates=[str(a) for a in allowed] if isinstance(allowed, list) else None,
            drop_pending_updates=call.get_bool("drop_pending_updates"),
        )
        self.webhook_sets.append(self.webhook)
        if self._webhook_task is None or self._webhook_task.done():
            self._webhook_task = asyncio.create_task(self._deliver_webhooks())
        self._notify()
        return True

    async def _stop_webhook_delivery(self) -> None:
        task, self._webhook_task = self._webhook_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _deliver_webhooks(self) -> None:
        posts: set[asyncio.Task[None]] = set()
        timeout = aiohttp.ClientTimeout(total=self.webhook_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                while self.webhook is not None and not self._closing:
                    next_retry = self._start_posts(http, self.webhook, posts)
                    wait = 1.0 if next_retry is None else max(0.0, next_retry - time.monotonic())
                    await self._wait_change(min(wait, 1.0))
            finally:
                for task in posts:
                    task.cancel()
                for task in posts:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    def _start_posts(
        self, http: aiohttp.ClientSession, hook: Webhook, posts: set[asyncio.Task[None]]
    ) -> float | None:
        """Post each chat's first pending update (if not being posted or waiting to be re-sent);
        returns when the next re-send is due."""
        self._updates = [queued for queued in self._updates if self._is_allowed(queued.payload)]
        now, next_retry = time.monotonic(), None
        busy_chats: set[object] = set()
        for queued in sorted(self._updates, key=lambda q: q.update_id):
            key = _chat_key(queued)
            if key in busy_chats:
                continue
            busy_chats.add(key)
            if queued.posting:
                continue
            if queued.retry_at > now:
                next_retry = min(next_retry or queued.retry_at, queued.retry_at)
                continue
            if len(posts) >= hook.max_connections:
                break
            queued.posting = True
            task = asyncio.create_task(self._post_update(http, hook, queued))
            posts.add(task)
            task.add_done_callback(posts.discard)
        return next_retry

    async def _post_update(
        self, http: aiohttp.ClientSession, hook: Webhook, queued: QueuedUpdate
    ) -> None:
        headers = (
            {"X-Telegram-Bot-Api-Secret-Token": hook.secret_token} if hook.secret_token else {}
        )
        status, error = 0, ""
        try:
            async with http.post(hook.url, json=queued.payload, headers=headers) as response:
                status = response.status
                await response.read()
                error = f"Wrong response from the webhook: {status} {response.reason}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"Connection failed: {type(exc).__name__}"
        finally:
            queued.posting = False
        self.webhook_deliveries.append(WebhookDelivery(queued.update_id, status, time.monotonic()))
        if 200 <= status < 300:
            queued.delivered = True
            self._updates = [q for q in self._updates if q is not queued]
        else:
            queued.retry_at = time.monotonic() + self.webhook_retry_delay
            self._webhook_error = (int(time.time()), error)
        self._notify()

    # -- updates --------------------------------------------------------------------------------

    def _queue(self, payload: dict[str, Any]) -> int:
        update_id = payload.get("update_id")
        if not isinstance(update_id, int):
            update_id = self._last_update_id + 1
            payload = {"update_id": update_id, **payload}
        self._last_update_id = max(self._last_update_id, update_id)
        self._updates.append(QueuedUpdate(update_id, payload))
        self._notify()
        return update_id

    def pending_update_ids(self) -> list[int]:
        return [queued.update_id for queued in self._updates]

    async def _get_updates(self, call: Call) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise TelegramError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        self.get_updates_times.append(time.monotonic())
        offset = call.get_int("offset") or 0
        limit = min(max(call.get_int("limit") or 100, 1), 100)
        timeout = min(max(call.get_int("timeout") or 0, 0), MAX_POLL_TIMEOUT)
        if self.ignore_poll_timeout:
            timeout = 0
        self._set_allowed_updates(call.params.get("allowed_updates"))
        self._confirm(offset)
        self._poll_serial += 1
        serial = self._poll_serial
        deadline = time.monotonic() + timeout
        while True:
            if serial != self._poll_serial:
                raise TelegramError(
                    409,
                    "Conflict: terminated by other getUpdates request; "
                    "make sure that only one bot instance is running",
                )
            batch = self._take_batch(limit)
            remaining = deadline - time.monotonic()
            if batch or self._closing or remaining <= 0 or self.ignore_poll_timeout:
                return batch
            await self._wait_change(remaining)

    def _set_allowed_updates(self, allowed: Any) -> None:
        if allowed is None:
            return
        if not isinstance(allowed, list):
            raise bad_request("can't parse allowed_updates JSON object")
        self._allowed_updates = frozenset(str(kind) for kind in allowed) or None

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            ordered = sorted(self._updates, key=lambda queued: queued.update_id)
            keep = {id(queued) for queued in ordered[offset:]}
            self._updates = [queued for queued in self._updates if id(queued) in keep]
        elif offset > 0:
            self._updates = [
                queued
                for queued in self._updates
                if not (queued.delivered and queued.update_id < offset)
            ]

    def _is_allowed(self, payload: dict[str, Any]) -> bool:
        kinds = set(payload) - {"update_id"}
        if self._allowed_updates is None:
            return not kinds & NON_DEFAULT_UPDATE_TYPES
        return bool(kinds & self._allowed_updates)

    def _take_batch(self, limit: int) -> list[dict[str, Any]]:
        self._updates = [queued for queued in self._updates if self._is_allowed(queued.payload)]
        ordered = sorted(self._updates, key=lambda queued: queued.update_id)[:limit]
        for queued in ordered:
            queued.delivered = True
        return [queued.payload for queued in ordered]

    # -- pushing updates ------------------------------------------------------------------------

    def push_update(self, raw: dict[str, Any]) -> int:
        """Queues any update as is; an update_id pushed again is delivered again."""
        for value in raw.values():
            if not isinstance(value, dict):
                continue
            chat = value.get("chat") or (value.get("message") or {}).get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                self._chats.setdefault(chat["id"], chat)
        return self._queue(dict(raw))

    def _push_message(
        self,
        user_id: int,
        content: dict[str, Any],
        *,
        chat_id: int | None,
        update_id: int | None,
        message_id: int | None,
        first_name: str,
        username: str | None,
        language_code: str | None,
        forward: bool,
        edited: bool,
        reply_to: int | None,
        message_thread_id: int | None = None,
    ) -> int:
        user = self._user(user_id, first_name, username, language_code)
        if chat_id is not None and chat_id < 0 and user_id not in self._chats:
            self._not_started.add(user_id)  # seen in a group, no private chat (yet)
        elif chat_id is None or chat_id == user_id:
            self._not_started.discard(user_id)  # writing to the bot starts the private chat
        chat = self.add_chat(
            chat_id if chat_id is not None else user_id, first_name=first_name, username=username
        )
        if edited and message_id is None:
            message_id = self._last_message_id.get(chat["id"])
        now = int(time.time())
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat["id"], message_id),
            "from": user,
            "chat": chat,
            "date": now,
        }
        if edited:
            message["edit_date"] = now
        if forward:
            message["forward_origin"] = {
                "type": "hidden_user",
                "sender_user_name": "Someone Else",
                "date": now - 60,
            }
        if reply_to is not None:
            original = self._messages.get((chat["id"], reply_to)) or {
                "message_id": reply_to,
                "date": now,
                "chat": chat,
            }
            message["reply_to_message"] = {
                k: v for k, v in original.items() if k != "reply_to_message"
            }
        if message_thread_id is not None:
            message["message_thread_id"] = message_thread_id
            if chat.get("is_forum"):
                message["is_topic_message"] = True
        message.update(content)
        self._messages[(chat["id"], message["message_id"])] = message
        if self.privacy and chat["id"] < 0 and not self._addressed(message):
            self.dropped_by_privacy += 1
            return 0
        payload: dict[str, Any] = {"edited_message" if edited else "message": message}
        if update_id is not None:
            payload["update_id"] = update_id
        return self._queue(payload)

    def _addressed(self, message: dict[str, Any]) -> bool:
        """What a bot in privacy mode receives from a group."""
        reply = message.get("reply_to_message") or {}
        if (reply.get("from") or {}).get("id") == self.bot_user["id"]:
            return True
        text = str(message.get("text") or message.get("caption") or "")
        entities = message.get("entities") or message.get("caption_entities") or []
        for entity in entities:
            if entity.get("type") != "bot_command":
                continue
            fragment = utf16_slice(text, entity["offset"], entity["length"])
            if fragment.lower().endswith("@" + str(self.bot_user["username"]).lower()):
                return True
        return False

    def push_text(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        update_id: int | None = None,
        message_id: int | None = None,
        entities: list[dict[str, Any]] | None = None,
        first_name: str = "Alice",
        username: str | None = "alice",
        language_code: str | None = "en",
        forward: bool = False,
        edited: bool = False,
        reply_to: int | None = None,
        message_thread_id: int | None = None,
    ) -> int:
        """A text message from a user; "/command" text gets a bot_command entity."""
        content: dict[str, Any] = {"text": text}
        found = entities if entities is not None else command_entities(text)
        if found:
            content["entities"] = found
        return self._push_message(
            user_id,
            content,
            chat_id=chat_id,
            update_id=update_id,
            message_id=message_id,
            first_name=first_name,
            username=username,
            language_code=language_code,
            forward=forward,
            edited=edited,
            reply_to=reply_to,
            message_thread_id=message_thread_id,
        )

    def push_photo(
        self,
        user_id: int,
        image_bytes: bytes,
        *,
        caption: str | None = None,
        caption_entities: list[dict[str, Any]] | None = None,
        media_group_id: str | None = None,
        file_size: int | None = None,
        width: int | None = None,
        height: int | None = None,
        chat_id: int | None = None,
        update_id: int | None = None,
        message_id: int | None = None,
        first_name: str = "Alice",
        username: str | None = "alice",
        language_code: str | None = "en",
        forward: bool = False,
        reply_to: int | None = None,
    ) -> int:
        """A compressed photo: a thumbnail plus the original bytes as the largest size."""
        if width is None or height is None:
            info = image_info(image_bytes)
            if info is None:
                raise ValueError("not an image: pass width= and height= for arbitrary bytes")
            width, height = info[0], info[1]
        content: dict[str, Any] = {
            "photo": self._store_photo(image_bytes, width, height, file_size)
        }
        content.update(caption_fields(caption, caption_entities, media_group_id))
        return self._push_message(
            user_id,
            content,
            chat_id=chat_id,
            update_id=update_id,
            message_id=message_id,
            first_name=first_name,
            username=username,
            language_code=language_code,
            forward=forward,
            edited=False,
            reply_to=reply_to,
        )

    def push_document(
        self,
        user_id: int,
        data: bytes,
        *,
        filename: str,
        mime_type: str,
        caption: str | None = None,
        caption_entities: list[dict[str, Any]] | None = None,
        media_group_id: str | None = None,
        file_size: int | None = None,
        chat_id: int | None = None,
        update_id: int | None = None,
        message_id: int | None = None,
        first_name: str = "Alice",
        username: str | None = "alice",
        language_code: str | None = "en",
        forward: bool = False,
        reply_to: int | None = None,
    ) -> int:
        """A file sent as a document (uncompressed images arrive this way)."""
        content: dict[str, Any] = {
            "document": self._store_document(data, filename, mime_type, file_size)
        }
        content.update(caption_fields(caption, caption_entities, media_group_id))
        return self._push_message(
            user_id,
            content,
            chat_id=chat_id,
            update_id=update_id,
            message_id=message_id,
            first_name=first_name,
            username=username,
            language_code=language_code,
            forward=forward,
            edited=False,
            reply_to=reply_to,
        )

    def push_voice(
        self,
        user_id: int,
        data: bytes,
        *,
        duration: int,
        mime_type: str = "audio/ogg",
        caption: str | None = None,
        file_size: int | None = None,
        audio: bool = False,
        filename: str | None = None,
        chat_id: int | None = None,
        update_id: int | None = None,
        first_name: str = "Alice",
        username: str | None = "alice",
        language_code: str | None = "en",
    ) -> int:
        """A voice note (`voice`, path voice/file_N.oga) or, with `audio=True`, a music file."""
        kind = "audio" if audio else "voice"
        extension = ".oga" if kind == "voice" else "." + (filename or "a.mp3").rsplit(".", 1)[-1]
        stored = self._new_file(
            kind, extension, data, file_size if file_size is not None else len(data)
        )
        media: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "duration": duration,
            "mime_type": mime_type,
            "file_size": stored.size,
        }
        if audio and filename:
            media["file_name"] = filename
        content: dict[str, Any] = {kind: media}
        content.update(caption_fields(caption, None, None))
        return self._push_message(
            user_id,
            content,
            chat_id=chat_id,
            update_id=update_id,
            message_id=None,
            first_name=first_name,
            username=username,
            language_code=language_code,
            forward=False,
            edited=False,
            reply_to=None,
        )

    def push_callback(
        self,
        user_id: int,
        data: str,
        *,
        message_id: int,
        chat_id: int | None = None,
        update_id: int | None = None,
        first_name: str = "Alice",
        username: str | None = "alice",
    ) -> int:
        """A press on an inline button of message `message_id`."""
        user = self._user(user_id, first_name, username, "en")
        chat = self.add_chat(chat_id if chat_id is not None else user_id, first_name=first_name)
        self._callback_serial += 1
        query_id = f"{user_id}{self._callback_serial:08d}"
        self._callback_ids.add(query_id)
        message = dict(self._messages.get((chat["id"], message_id)) or {})
        message = message or {"message_id": message_id, "date": 0, "chat": chat}
        query = {
            "id": query_id,
            "from": user,
            "message": message,
            "chat_instance": str(chat["id"]),
            "data": data,
        }
        payload: dict[str, Any] = {"callback_query": query}
        if update_id is not None:
            payload["update_id"] = update_id
        return self._queue(payload)

    # -- text messages --------------------------------------------------------------------------

    def _message_text(self, call: Call, *, allow_empty: bool = False) -> Formatted:
        text = call.get_str("text") or ""
        formatted = format_text(text, call.get_str("parse_mode"), call.params.get("entities"))
        if not formatted.text.strip() and not allow_empty:
            raise bad_request("message text is empty")
        if utf16_len(formatted.text) > MAX_TEXT_LENGTH:
            raise bad_request("message is too long")
        return formatted

    def _caption(self, call: Call, raw: dict[str, Any] | None = None) -> Formatted | None:
        source = raw if raw is not None else call.params
        caption = source.get("caption")
        if caption in (None, ""):
            return None
        entities = source.get("caption_entities")
        formatted = format_text(str(caption), source.get("parse_mode"), entities)
        if utf16_len(formatted.text) > MAX_CAPTION_LENGTH:
            raise bad_request("message caption is too long")
        return formatted

    async def _send_message(self, call: Call) -> dict[str, Any]:
        chat = self._chat(call.chat_id())
        formatted = self._message_text(call)
        markup = check_reply_markup(call.params.get("reply_markup"))
        content = {**self._reply_to(call, chat["id"]), **text_fields(formatted)}
        content.update(self._thread_fields(call))
        if markup and "inline_keyboard" in markup:
            content["reply_markup"] = markup
        message = self._store_bot_message(chat, content)
        self._record_sent(
            SentItem(
                "sendMessage",
                chat["id"],
                time.monotonic(),
                message_id=message["message_id"],
                text=call.get_str("text"),
                entities=call.params.get("entities"),
                parse_mode=call.get_str("parse_mode"),
                reply_markup=markup,
                parsed_text=formatted.text,
                message_thread_id=call.get_int("message_thread_id"),
                reply_to_message_id=(content.get("reply_to_message") or {}).get("message_id"),
            )
        )
        return message

    def _thread_fields(self, call: Call) -> dict[str, Any]:
        thread = call.get_int("message_thread_id")
        if thread is None:
            return {}
        return {"message_thread_id": thread, "is_topic_message": True}

    async def _edit_message_text(self, call: Call) -> dict[str, Any] | bool:
        formatted = self._message_text(call)
        markup = check_reply_markup(call.params.get("reply_markup"))
        if call.has("inline_message_id"):
            return True
        chat_id = call.chat_id()
        message_id = call.get_int("message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = self._messages.get((chat_id, message_id))
        if message is None:
            raise bad_request("message to edit not found")
        if message.get("from", {}).get("id") != self.bot_user["id"]:
            raise bad_request("message can't be edited")
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        inline = markup if markup and "inline_keyboard" in markup else None
        same_text = message["text"] == formatted.text
        same_entities = message.get("entities", []) == formatted.entities
        if same_text and same_entities and message.get("reply_markup") == inline:
            raise bad_request(NOT_MODIFIED)
        message.pop("entities", None)
        message.pop("reply_markup", None)
        message.update(text_fields(formatted), edit_date=int(time.time()))
        if inline:
            message["reply_markup"] = inline
        self._record_sent(
            SentItem(
                "editMessageText",
                chat_id,
                time.monotonic(),
                message_id=message_id,
                text=call.get_str("text"),
                entities=call.params.get("entities"),
                parse_mode=call.get_str("parse_mode"),
                reply_markup=markup,
                parsed_text=formatted.text,
            )
        )
        return dict(message)

    async def _send_message_draft(self, call: Call) -> bool:
        chat = self._chat(call.chat_id())
        draft_id = call.get_int("draft_id")
        if not draft_id:
            raise bad_request("draft_id must be non-zero")
        if chat["type"] != "private":
            raise bad_request("message drafts can be sent only to private chats")
        formatted = self._message_text(call, allow_empty=True)
        self._record_sent(
            SentItem(
                "sendMessageDraft",
                chat["id"],
                time.monotonic(),
                text=call.get_str("text"),
                entities=call.params.get("entities"),
                parse_mode=call.get_str("parse_mode"),
                draft_id=draft_id,
                parsed_text=formatted.text,
            )
        )
        return True

    async def _send_chat_action(self, call: Call) -> bool:
        chat = self._chat(call.chat_id())
        action = call.get_str("action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self._record_sent(
            SentItem(
                "sendChatAction",
                chat["id"],
                time.monotonic(),
                action=action,
                message_thread_id=call.get_int("message_thread_id"),
            )
        )
        return True

    async def _delete_message(self, call: Call) -> bool:
        chat_id = call.chat_id()
        message_id = call.get_int("message_id")
        if message_id is None or self._messages.pop((chat_id, message_id), None) is None:
            raise bad_request("message to delete not found")
        return True

    # -- media ----------------------------------------------------------------------------------

    async def _send_photo(self, call: Call) -> dict[str, Any]:
        chat = self._chat(call.chat_id())
        caption = self._caption(call)
        upload = self._prepare_photo(call, call.params.get("photo"))
        markup = check_reply_markup(call.params.get("reply_markup"))
        sizes = upload.existing_sizes or self._store_photo(upload.data, upload.width, upload.height)
        content = {**self._reply_to(call, chat["id"]), "photo": sizes, **caption_content(caption)}
        if markup and "inline_keyboard" in markup:
            content["reply_markup"] = markup
        message = self._store_bot_message(chat, content)
        item = self._media_item("sendPhoto", chat["id"], message, call.params, caption)
        self._record_sent(
            replace(
                item,
                photo=upload.data,
                filename=upload.filename,
                mime=upload.mime,
                message_thread_id=call.get_int("message_thread_id"),
            )
        )
        return message

    async def _send_document(self, call: Call) -> dict[str, Any]:
        chat = self._chat(call.chat_id())
        caption = self._caption(call)
        upload = self._prepare_document(call, call.params.get("document"))
        markup = check_reply_markup(call.params.get("reply_markup"))
        document = upload.existing or self._store_document(
            upload.data, upload.filename, upload.mime
        )
        content = {
            **self._reply_to(call, chat["id"]),
            "document": document,
            **caption_content(caption),
        }
        if markup and "inline_keyboard" in markup:
            content["reply_markup"] = markup
        message = self._store_bot_message(chat, content)
        item = self._media_item("sendDocument", chat["id"], message, call.params, caption)
        self._record_sent(
            replace(
                item,
                document=upload.data,
                filename=upload.filename,
                mime=upload.mime,
                message_thread_id=call.get_int("message_thread_id"),
            )
        )
        return message

    async def _send_media_group(self, call: Call) -> list[dict[str, Any]]:
        chat = self._chat(call.chat_id())
        media = call.params.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise bad_request("media must contain 2-10 items")
        kinds = {item.get("type") if isinstance(item, dict) else None for item in media}
        if not kinds <= {"photo", "document"}:
            raise bad_request(f"unsupported media type in {sorted(map(str, kinds))}")
        if kinds == {"photo", "document"}:
            raise bad_request("documents can't be mixed with other media types")
        prepared = [self._prepare_album_item(call, item) for item in media]
        reply = self._reply_to(call, chat["id"])
        self._media_group_serial += 1
        group_id = str(self._media_group_serial)
        return [
            self._store_album_item(chat, item, upload, caption, group_id, reply)
            for item, (upload, caption) in zip(media, prepared, strict=True)
        ]

    def _prepare_album_item(
        self, call: Call, item: dict[str, Any]
    ) -> tuple[PhotoUpload | DocumentUpload, Formatted | None]:
        caption = self._caption(call, item)
        if item["type"] == "photo":
            return self._prepare_photo(call, item.get("media"), "media"), caption
        return self._prepare_document(call, item.get("media"), "media"), caption

    def _store_album_item(
        self,
        chat: dict[str, Any],
        item_params: dict[str, Any],
        upload: PhotoUpload | DocumentUpload,
        caption: Formatted | None,
        group_id: str,
        reply: dict[str, Any],
    ) -> dict[str, Any]:
        content: dict[str, Any] = {**reply, "media_group_id": group_id, **caption_content(caption)}
        is_photo = isinstance(upload, PhotoUpload)
        if isinstance(upload, PhotoUpload):
            content["photo"] = upload.existing_sizes or self._store_photo(
                upload.data, upload.width, upload.height
            )
        else:
            content["document"] = upload.existing or self._store_document(
                upload.data, upload.filename, upload.mime
            )
        message = self._store_bot_message(chat, content)
        item = self._media_item("sendMediaGroup", chat["id"], message, item_params, caption)
        self._record_sent(
            replace(
                item,
                photo=upload.data if is_photo else None,
                document=None if is_photo else upload.data,
                filename=upload.filename,
                mime=upload.mime,
                media_group_id=group_id,
            )
        )
        return message

    def _media_item(
        self,
        method: str,
        chat_id: int,
        message: dict[str, Any],
        source: dict[str, Any],
        caption: Formatted | None,
    ) -> SentItem:
        photo_sizes = message.get("photo") or [{}]
        file_id = photo_sizes[-1].get("file_id") or (message.get("document") or {}).get("file_id")
        markup = source.get("reply_markup")
        return SentItem(
            method,
            chat_id,
            time.monotonic(),
            message_id=message["message_id"],
            caption=source.get("caption"),
            entities=source.get("caption_entities"),
            parse_mode=source.get("parse_mode"),
            reply_markup=markup if isinstance(markup, dict) else None,
            file_id=file_id,
            parsed_text=caption.text if caption else None,
        )

    async def _get_file(self, call: Call) -> dict[str, Any]:
        file_id = call.get_str("file_id") or ""
        stored = self._files.get(file_id)
        if stored is None:
            raise bad_request("invalid file_id")
        if stored.size > MAX_DOWNLOAD_BYTES:
            raise bad_request("file is too big")
        size = stored.size or len(stored.content())
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": size,
            "file_path": stored.path,
        }

    # -- commands and callbacks -----------------------------------------------------------------

    def _commands_key(self, call_scope: Any, language_code: str | None) -> tuple[str, str]:
        scope = call_scope if isinstance(call_scope, dict) else {"type": "default"}
        return json.dumps(scope, sort_keys=True), language_code or ""

    def commands(self, scope: dict[str, Any] | None = None, language_code: str = "") -> list[Any]:
        return list(self._commands.get(self._commands_key(scope, language_code), []))

    async def _set_my_commands(self, call: Call) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad_request("too many commands specified")
        for command in commands:
            name = command.get("command", "") if isinstance(command, dict) else ""
            if not BOT_COMMAND_NAME_RE.fullmatch(str(name)):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        key = self._commands_key(call.params.get("scope"), call.get_str("language_code"))
        self._commands[key] = commands
        return True

    async def _get_my_commands(self, call: Call) -> list[Any]:
        key = self._commands_key(call.params.get("scope"), call.get_str("language_code"))
        return self._commands.get(key, [])

    async def _delete_my_commands(self, call: Call) -> bool:
        key = self._commands_key(call.params.get("scope"), call.get_str("language_code"))
        self._commands.pop(key, None)
        return True

    async def _answer_callback_query(self, call: Call) -> bool:
        query_id = call.get_str("callback_query_id")
        if query_id not in self._callback_ids:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        if len(call.get_str("text") or "") > 200:
            raise bad_request("MESSAGE_TOO_LONG")
        self._callback_ids.discard(query_id)
        return True

    # -- Stars ------------------------------------------------------------------------------------

    async def _send_invoice(self, call: Call) -> dict[str, Any]:
        chat = self._chat(call.chat_id())
        invoice = check_invoice(call)
        markup = check_reply_markup(call.params.get("reply_markup"))
        content: dict[str, Any] = {"invoice": invoice}
        if markup and "inline_keyboard" in markup:
            content["reply_markup"] = markup
        message = self._store_bot_message(chat, content)
        self.stars.invoices.append(
            SentInvoice(chat["id"], message["message_id"], invoice, str(call.params["payload"]))
        )
        self._record_sent(
            SentItem(
                "sendInvoice",
                chat["id"],
                time.monotonic(),
                message_id=message["message_id"],
                text=invoice["title"],
                reply_markup=markup,
            )
        )
        return message

    async def _answer_pre_checkout_query(self, call: Call) -> bool:
        query_id = call.get_str("pre_checkout_query_id") or ""
        asked = self.stars.queries.get(query_id)
        if asked is None or time.monotonic() - asked > PRE_CHECKOUT_TIMEOUT:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        ok = call.get_bool("ok")
        error_message = call.get_str("error_message")
        if not ok and not error_message:
            raise bad_request("ERROR_MESSAGE_EMPTY")
        del self.stars.queries[query_id]
        self.stars.answers[query_id] = PreCheckoutAnswer(
            ok, error_message, time.monotonic() - asked
        )
        return True

    async def _refund_star_payment(self, call: Call) -> bool:
        charge_id = call.get_str("telegram_payment_charge_id") or ""
        user_id = call.get_int("user_id")
        self.stars.refund_calls += 1
        if self.stars.stall_refunds == "before":  # the request never gets processed
            await self.stars.released.wait()
            raise TelegramError(502, "Bad Gateway")
        charge = self.stars.charges.get(charge_id)
        if charge is None or charge["user_id"] != user_id:
            raise bad_request("CHARGE_NOT_FOUND")
        if charge["refunded"]:
            raise bad_request("CHARGE_ALREADY_REFUNDED")
        self.stars.refund(charge_id)
        self._notify()
        if self.stars.stall_refunds == "after":  # processed, but the answer never arrives
            await self.stars.released.wait()
        return True

    async def _get_star_transactions(self, call: Call) -> dict[str, Any]:
        offset = call.get_int("offset") or 0
        limit = call.get_int("limit")
        limit = 100 if limit is None else limit
        if not 1 <= limit <= 100 or offset < 0:
            raise bad_request("LIMIT_INVALID" if offset >= 0 else "OFFSET_INVALID")
        return {"transactions": self.stars.transactions[offset : offset + limit]}

    def push_pre_checkout(
        self,
        user_id: int,
        stars: int,
        payload: str,
        *,
        currency: str = "XTR",
        first_name: str = "Alice",
        username: str | None = "alice",
    ) -> str:
        """A person pressed Pay on an invoice; the bot has 10 s to answer. Returns the query id."""
        user = self._user(user_id, first_name, username, "en")
        self.stars.serial += 1
        query_id = f"pcq{user_id}{self.stars.serial:06d}"
        self.stars.queries[query_id] = time.monotonic()
        self._queue(
            {
                "pre_checkout_query": {
                    "id": query_id,
                    "from": user,
                    "currency": currency,
                    "total_amount": stars,
                    "invoice_payload": payload,
                }
            }
        )
        return query_id

    def push_successful_payment(
        self,
        user_id: int,
        stars: int,
        payload: str,
        *,
        charge_id: str | None = None,
        deliver: bool = True,
        first_name: str = "Alice",
        username: str | None = "alice",
    ) -> str:
        """Telegram took `stars` from the person; the service message goes to the bot unless
        `deliver` is False. Pushing the same charge_id again delivers it again (a duplicate)."""
        if charge_id is None:
            self.stars.serial += 1
            charge_id = f"stxfake{user_id}x{self.stars.serial:06d}"
        user = self._user(user_id, first_name, username, "en")
        if charge_id not in self.stars.charges:
            self.stars.pay(charge_id, user, stars, payload)
        if deliver:
            self._push_message(
                user_id,
                {
                    "successful_payment": {
                        "currency": "XTR",
                        "total_amount": stars,
                        "invoice_payload": payload,
                        "telegram_payment_charge_id": charge_id,
                        "provider_payment_charge_id": "",
                    }
                },
                chat_id=None,
                update_id=None,
                message_id=None,
                first_name=first_name,
                username=username,
                language_code="en",
                forward=False,
                edited=False,
                reply_to=None,
            )
        return charge_id

    def refund_outside(self, charge_id: str) -> None:
        """The charge is refunded without the bot asking (by the owner, or a store chargeback)."""
        self.stars.refund(charge_id)

    # -- test-facing queries --------------------------------------------------------------------

    def sent(
        self, chat_id: int, *, include_drafts: bool = False, include_actions: bool = False
    ) -> list[SentItem]:
        """Everything the bot successfully sent to the chat, in order."""
        hidden = set()
        if not include_drafts:
            hidden.add("sendMessageDraft")
        if not include_actions:
            hidden.add("sendChatAction")
        return [item for item in self._sent.get(chat_id, []) if item.method not in hidden]

    def sent_count(self, chat_id: int) -> int:
        """How many items (chat actions and drafts included) the chat has received so far."""
        return len(self._sent.get(chat_id, []))

    def sent_since(self, chat_id: int, start: int) -> list[SentItem]:
        """The chat's items from position `start` of `sent_count` on, chat actions and drafts
        included: a waiter that noted the count reads only what is new, not the whole chat."""
        return self._sent.get(chat_id, [])[start:]

    def calls(self, method: str) -> list[RequestRecord]:
        """Every call of `method` (case-insensitive), failed ones included."""
        wanted = method.lower()
        return [record for record in self.requests if record.method.lower() == wanted]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Waits until predicate() is true; it is re-checked whenever the fake's state changes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"condition not met within {timeout} s\n{self.describe_recent()}"
                )
            await self._wait_change(remaining)

    async def wait_for_sent(
        self,
        chat_id: int,
        count: int,
        timeout: float = 10.0,
        methods: Sequence[str] = DEFAULT_SENT_METHODS,
    ) -> list[SentItem]:
        """Waits until at least `count` items of `methods` were sent to the chat; returns them."""
        wanted = {method.lower() for method in methods}

        def matching() -> list[SentItem]:
            items = self.sent(chat_id, include_drafts=True, include_actions=True)
            return [item for item in items if item.method.lower() in wanted]

        try:
            await self.wait_for(lambda: len(matching()) >= count, timeout)
        except AssertionError:
            raise AssertionError(
                f"expected {count} x {sorted(methods)} in chat {chat_id} within {timeout} s, "
                f"got {len(matching())}\n{self.describe_recent(chat_id)}"
            ) from None
        return matching()

    def describe_recent(self, chat_id: int | None = None, limit: int = 20) -> str:
        """A readable summary of what was sent and which calls failed, for assertion messages."""
        lines = []
        chats = [chat_id] if chat_id is not None else list(self._sent)
        for chat in chats:
            items = self._sent.get(chat, [])
            lines.append(f"sent to chat {chat}: {len(items)} item(s)")
            lines.extend(f"  {describe_item(item)}" for item in items[-limit:])
        failed = [record for record in self.requests if record.ok is False][-limit:]
        lines.append(f"failed calls: {len(failed)}")
        lines.extend(
            f"  {record.method} chat={record.params.get('chat_id')} -> {record.error_code} "
            f"{record.description}"
            for record in failed
        )
        return "\n".join(lines)


def describe_item(item: SentItem) -> str:
    body = item.text if item.text is not None else item.caption
    extra = item.action or (f"draft {item.draft_id}" if item.draft_id else "")
    if item.photo is not None:
        extra = f"photo {len(item.photo)} bytes"
    if item.document is not None:
        extra = f"document {item.filename} {len(item.document)} bytes"
    return f"{item.method} #{item.message_id} {extra} {body!r}"[:300]


def text_fields(formatted: Formatted) -> dict[str, Any]:
    fields: dict[str, Any] = {"text": formatted.text}
    if formatted.entities:
        fields["entities"] = formatted.entities
    return fields


def caption_content(caption: Formatted | None) -> dict[str, Any]:
    if caption is None:
        return {}
    content: dict[str, Any] = {"caption": caption.text}
    if caption.entities:
        content["caption_entities"] = caption.entities
    return content


def caption_fields(
    caption: str | None, entities: list[dict[str, Any]] | None, media_group_id: str | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if caption:
        fields["caption"] = caption
        if entities:
            fields["caption_entities"] = entities
    if media_group_id:
        fields["media_group_id"] = media_group_id
    return fields
