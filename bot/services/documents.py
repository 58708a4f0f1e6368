"""PDFs and text files the person sends: what they are, and whether they can be read safely.

PDFs are checked with pypdf before anything is uploaded or charged: an encrypted, corrupt,
empty or oversized PDF is refused with a plain reply. The check runs in a long-lived child
process (`bot.services.pdf_check`, driven by `bot.services.pdf_worker.PdfChecker`) with a CPU-time
and address-space limit and a wall-clock deadline after which it is killed and replaced; it checks
one PDF at a time, so PDF bombs cannot take both cores. Inside it,
pypdf's own limits on decompression and object sizes apply, nesting deeper than
MAX_OBJECT_DEPTH and object graphs larger than MAX_OBJECT_NODES are refused, and a page tree
that claims more than MAX_PDF_PAGES pages is refused before it is walked.

Text files are decoded as UTF-8, else as the encoding charset-normalizer detects (cp1251 and the
like); NUL bytes mean binary content in disguise and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.i18n import N_, _
from bot.services import pdf_check
from bot.services.pdf_worker import PdfChecker, PdfCheckerUnavailable

MEBIBYTE = 1024 * 1024
MAX_PDF_BYTES = 20 * MEBIBYTE
MAX_PDF_PAGES = pdf_check.MAX_PDF_PAGES
MAX_TEXT_BYTES = 1 * MEBIBYTE
_DETECT_SAMPLE_BYTES = 64 * 1024

PDF_MIME = "application/pdf"
TEXT_EXTENSIONS = frozenset(
    {
        "txt", "md", "markdown", "csv", "tsv", "json", "jsonl", "xml", "yaml", "yml", "toml",
        "ini", "cfg", "conf", "log", "rst", "tex", "html", "htm", "css", "scss", "sql", "srt",
        "vtt", "py", "pyi", "js", "mjs", "cjs", "ts", "tsx", "jsx", "java", "kt", "kts", "c",
        "h", "cc", "cpp", "cxx", "hpp", "cs", "go", "rs", "rb", "php", "swift", "m", "scala",
        "sh", "bash", "zsh", "ps1", "bat", "lua", "pl", "r", "dart", "ex", "exs", "erl", "hs",
        "clj", "vue", "svelte", "gradle", "dockerfile", "makefile", "env", "properties", "proto",
        "graphql", "ipynb",
    }
)  # fmt: skip
TEXT_MIME_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/x-sh",
        "application/javascript",
        "application/x-python",
        "application/sql",
    }
)

PDF_TOO_LARGE_REPLY = N_("This PDF is too large: I can read PDFs up to 20 MB.")
PDF_ENCRYPTED_REPLY = N_(
    "This PDF is password-protected, so I can't read it. Send a copy without a password. "
    "Nothing was charged."
)
PDF_CORRUPT_REPLY = N_("This PDF looks damaged and I can't read it. Nothing was charged.")
PDF_EMPTY_REPLY = N_("This PDF has no pages, so there is nothing to read. Nothing was charged.")
PDF_TOO_MANY_PAGES_REPLY = N_(
    "This PDF has too many pages: I can read PDFs of up to {pages} pages. Nothing was charged."
)
PDF_TOO_COMPLEX_REPLY = N_("This PDF is too complex for me to open safely. Nothing was charged.")
TEXT_TOO_LARGE_REPLY = N_("This text file is too large: I can read text files up to 1 MB.")
TEXT_BINARY_REPLY = N_(
    "This file doesn't look like text (it contains binary data), so I can't read it. "
    "Nothing was charged."
)
TEXT_UNDECODABLE_REPLY = N_(
    "I couldn't work out the encoding of this text file. Save it as UTF-8 and send it again. "
    "Nothing was charged."
)
TEXT_EMPTY_REPLY = N_("This text file is empty. Nothing was charged.")


class DocumentRejected(Exception):
    """A document that is refused, with the reply for the person and a short reason code (the
    reply is a catalog msgid, translated where it is shown, or a text translated already)."""

    def __init__(self, reason: str, reply: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = reply


def extension(filename: str | None) -> str:
    name = (filename or "").rsplit("/", 1)[-1].lower()
    if "." not in name:
        return name if name in ("dockerfile", "makefile") else ""
    return name.rsplit(".", 1)[-1]


def is_pdf(filename: str | None, mime_type: str | None) -> bool:
    return (mime_type or "").lower() == PDF_MIME or extension(filename) == "pdf"


def is_text(filename: str | None, mime_type: str | None) -> bool:
    mime = (mime_type or "").lower()
    if mime.startswith("image/") or mime == PDF_MIME:
        return False
    return (
        mime.startswith("text/")
        or mime in TEXT_MIME_TYPES
        or extension(filename) in TEXT_EXTENSIONS
    )


# PDFs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PdfInfo:
    pages: int


_REPLIES = {
    "pdf_encrypted": PDF_ENCRYPTED_REPLY,
    "pdf_corrupt": PDF_CORRUPT_REPLY,
    "pdf_empty": PDF_EMPTY_REPLY,
    "pdf_too_many_pages": PDF_TOO_MANY_PAGES_REPLY,
    "pdf_too_complex": PDF_TOO_COMPLEX_REPLY,
    "too_large": PDF_TOO_LARGE_REPLY,
}


async def check_pdf(data: bytes, checker: PdfChecker) -> PdfInfo:
    """The page count of a readable PDF; raises DocumentRejected for anything else."""
    if len(data) > MAX_PDF_BYTES:
        raise DocumentRejected("too_large", PDF_TOO_LARGE_REPLY)
    if not data.lstrip()[:5] == b"%PDF-":
        raise DocumentRejected("pdf_corrupt", PDF_CORRUPT_REPLY)
    try:
        result = await checker.check(data)
        if "pages" in result:
            return PdfInfo(pages=int(result["pages"]))
        reason = str(result["rejected"])
    except (PdfCheckerUnavailable, ValueError, KeyError, TypeError):
        reason = "pdf_too_complex"  # killed by a limit or the deadline, or no answer
    raise DocumentRejected(reason, pdf_reply(reason))


def pdf_reply(reason: str) -> str:
    """The person's reply for a refused PDF, in their language."""
    return _(_REPLIES.get(reason, PDF_TOO_COMPLEX_REPLY)).format(pages=MAX_PDF_PAGES)


def inspect_pdf(data: bytes) -> PdfInfo:
    """The check the child runs, in this process (for tests and tools)."""
    try:
        return PdfInfo(pages=pdf_check.inspect(data))
    except pdf_check.PdfRejected as exc:
        raise DocumentRejected(exc.reason, _REPLIES[exc.reason]) from None


# Text files ------------------------------------------------------------------------------------


def decode_text(data: bytes) -> str:
    """The text of a text file; raises DocumentRejected for binary or undecodable content."""
    if len(data) > MAX_TEXT_BYTES:
        raise DocumentRejected("too_large", TEXT_TOO_LARGE_REPLY)
    if b"\x00" in data and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DocumentRejected("text_binary", TEXT_BINARY_REPLY)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = _detected(data)
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise DocumentRejected("text_empty", TEXT_EMPTY_REPLY)
    if _control_share(text) > 0.05:
        raise DocumentRejected("text_binary", TEXT_BINARY_REPLY)
    return text


def _detected(data: bytes) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(data[:_DETECT_SAMPLE_BYTES]).best()
    if best is None or best.encoding is None:
        raise DocumentRejected("text_undecodable", TEXT_UNDECODABLE_REPLY)
    try:
        return data.decode(best.encoding)
    except (UnicodeDecodeError, LookupError):
        raise DocumentRejected("text_undecodable", TEXT_UNDECODABLE_REPLY) from None


def _control_share(text: str) -> float:
    sample = text[:_DETECT_SAMPLE_BYTES]
    controls = sum(1 for ch in sample if ord(ch) < 32 and ch not in "\n\r\t\f\v")
    return controls / max(1, len(sample))
