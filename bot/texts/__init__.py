"""Operator-editable texts (/paysupport, /terms, /privacy): a file in TEXTS_DIR wins over the
built-in one, per language: `terms.ru.md` for Russian, `terms.md` for everyone else."""

from __future__ import annotations

from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "builtin"
NAMES = frozenset({"paysupport", "terms", "privacy"})
MAX_TEXT_CHARS = 4000  # one Telegram message (4096) with room to spare


class Texts:
    def __init__(self, texts_dir: Path | None) -> None:
        self._dirs = [d for d in (texts_dir, BUILTIN_DIR) if d is not None]

    def get(self, name: str, language: str | None = None) -> str:
        """The text `name` for `language` (an IETF tag such as "ru" or "ru-RU"); files are read
        on every call, so an operator's edit shows without a restart."""
        if name not in NAMES:
            raise KeyError(name)
        lang = (language or "").split("-")[0].lower()
        candidates = ([f"{name}.{lang}.md"] if lang.isalpha() and lang != "en" else []) + [
            f"{name}.md"
        ]
        for directory in self._dirs:
            for filename in candidates:
                path = directory / filename
                if path.is_file():
                    text = path.read_text(encoding="utf-8").strip()
                    if text:
                        return text[:MAX_TEXT_CHARS]
        raise LookupError(f"no text {name!r}")
