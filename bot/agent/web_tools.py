"""Anthropic's server tools (web_search, web_fetch): their definitions, their price on top of
tokens, and the sources a cited answer shows the person.

Anthropic runs these tools itself; the loop only passes their blocks back unchanged, continues a
`pause_turn` and charges what `usage.server_tool_use` reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anthropic.types import Message

MAX_USES = 5
WEB_SEARCH_MICROS = 10_000  # 10 USD per 1000 searches, on top of the tokens of the results
WEB_FETCH_MICROS = 0  # tokens only
MAX_SOURCES = 5
_TITLE_LIMIT = 80


@dataclass(frozen=True)
class ServerToolUse:
    web_search_requests: int = 0
    web_fetch_requests: int = 0

    @property
    def cost_micros(self) -> int:
        return (
            self.web_search_requests * WEB_SEARCH_MICROS
            + self.web_fetch_requests * WEB_FETCH_MICROS
        )


def server_tool_params(enabled: bool, used: ServerToolUse | None = None) -> list[dict[str, Any]]:
    """The server tool definitions. `max_uses` counts per request at Anthropic; the budget here is
    per turn, so a later call of a turn that already searched gets what is left (and a tool whose
    uses are spent is left out). The first call of every turn sends the same bytes, which keeps
    them in the cached prefix."""
    if not enabled:
        return []
    used = used or ServerToolUse()
    params = []
    for kind, name, spent in (
        ("web_search_20250305", "web_search", used.web_search_requests),
        ("web_fetch_20250910", "web_fetch", used.web_fetch_requests),
    ):
        if spent < MAX_USES:
            params.append({"type": kind, "name": name, "max_uses": MAX_USES - spent})
    return params


def server_tool_use(message: Message) -> ServerToolUse:
    """What the provider reported in `usage.server_tool_use` (zero when absent)."""
    usage = getattr(message.usage, "server_tool_use", None)
    if usage is None:
        return ServerToolUse()
    if isinstance(usage, dict):
        return ServerToolUse(
            int(usage.get("web_search_requests") or 0), int(usage.get("web_fetch_requests") or 0)
        )
    return ServerToolUse(
        int(getattr(usage, "web_search_requests", 0) or 0),
        int(getattr(usage, "web_fetch_requests", 0) or 0),
    )


def worst_case_micros(enabled: bool, used: ServerToolUse | None = None) -> int:
    """The most the server tools of one call can add: every search left in the turn."""
    if not enabled:
        return 0
    used = used or ServerToolUse()
    searches = max(0, MAX_USES - used.web_search_requests)
    fetches = max(0, MAX_USES - used.web_fetch_requests)
    return searches * WEB_SEARCH_MICROS + fetches * WEB_FETCH_MICROS


def sources_markdown(message: Message) -> str:
    """The cited pages of an answer as Markdown links, one line, or "" when nothing was cited."""
    seen: dict[str, str] = {}
    for block in message.content:
        if block.type != "text":
            continue
        for citation in getattr(block, "citations", None) or []:
            url = _field(citation, "url")
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                continue
            title = _field(citation, "title")
            seen.setdefault(url, _clean_title(title if isinstance(title, str) else "") or url)
    if not seen:
        return ""
    links = [f"[{title}]({_escape_url(url)})" for url, title in list(seen.items())[:MAX_SOURCES]]
    return "\n\nSources: " + ", ".join(links)


def _field(item: Any, name: str) -> Any:
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _clean_title(title: str) -> str:
    cleaned = " ".join(title.replace("[", "(").replace("]", ")").split())
    return cleaned[:_TITLE_LIMIT] + ("…" if len(cleaned) > _TITLE_LIMIT else "")


def _escape_url(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
