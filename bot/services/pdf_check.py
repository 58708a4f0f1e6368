"""The PDF check, run as a child process: `python -m bot.services.pdf_check` reads a PDF on stdin
and writes one JSON line, `{"pages": n}` or `{"rejected": reason}`.

The child sets hard limits on itself (CPU seconds, address space) before it reads anything, and
the parent kills it after a timeout, so a PDF bomb costs a bounded share of one core and of
memory and never touches the bot's process; pypdf (15-25 MB once imported) stays out of the bot.
This module imports only the standard library at the top, so the child starts in about 0.1 s.

Checks: a page tree that claims more than MAX_PDF_PAGES pages is refused before it is walked;
nesting deeper than MAX_OBJECT_DEPTH (in the raw file and in the parsed objects) and object
graphs larger than MAX_OBJECT_NODES are refused; encrypted PDFs are refused; pypdf's own limits
on decompression and object sizes apply.
"""

from __future__ import annotations

import io
import json
import logging
import re
import resource
import sys

MEBIBYTE = 1024 * 1024
MAX_PDF_PAGES = 100  # Claude's limit for a request under a 1M-token context window
PDF_CHECK_CPU_SECONDS = 10
PDF_CHECK_MEMORY_BYTES = 768 * MEBIBYTE  # address space of the child


class PdfRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def limit_this_process() -> None:
    """Hard CPU and memory limits, set by the child on itself before it reads the PDF."""
    resource.setrlimit(resource.RLIMIT_CPU, (PDF_CHECK_CPU_SECONDS, PDF_CHECK_CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_AS, (PDF_CHECK_MEMORY_BYTES, PDF_CHECK_MEMORY_BYTES))


def inspect(data: bytes) -> int:
    """Open the PDF and count its pages, refusing encrypted, broken, empty and huge ones."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed input is expected here
    try:
        if _raw_nesting(data) > MAX_OBJECT_DEPTH:
            raise PdfRejected("pdf_too_complex")
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise PdfRejected("pdf_encrypted")
        declared = _declared_pages(reader)
        if declared is not None and declared > MAX_PDF_PAGES:
            raise PdfRejected("pdf_too_many_pages")
        pages = len(reader.pages)
        if pages <= MAX_PDF_PAGES:
            _check_structure(reader)
    except PdfRejected:
        raise
    except RecursionError:
        raise PdfRejected("pdf_too_complex") from None
    except MemoryError:
        raise PdfRejected("pdf_too_complex") from None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError):
        raise PdfRejected("pdf_corrupt") from None
    except Exception:  # pypdf raises many kinds on hostile input
        raise PdfRejected("pdf_corrupt") from None
    if pages == 0:
        raise PdfRejected("pdf_empty")
    if pages > MAX_PDF_PAGES:
        raise PdfRejected("pdf_too_many_pages")
    return pages


MAX_OBJECT_DEPTH = 48
MAX_OBJECT_NODES = 200_000


def _check_structure(reader: object) -> None:
    """Walk every page's objects (resolving references once each), refusing nesting deeper than
    MAX_OBJECT_DEPTH or more than MAX_OBJECT_NODES nodes: the shapes of a PDF bomb. Stream
    contents are not decoded here."""
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    seen: set[tuple[int, int]] = set()
    budget = MAX_OBJECT_NODES
    for page in reader.pages:  # type: ignore[attr-defined]
        stack: list[tuple[object, int]] = [(page, 0)]
        while stack:
            node, depth = stack.pop()
            budget -= 1
            if budget < 0 or depth > MAX_OBJECT_DEPTH:
                raise PdfRejected("pdf_too_complex")
            if isinstance(node, IndirectObject):
                key = (node.idnum, node.generation)
                if key in seen:
                    continue
                seen.add(key)
                node = node.get_object()
            if isinstance(node, DictionaryObject):
                stack.extend(
                    (value, depth + 1) for name, value in node.items() if name != "/Parent"
                )
            elif isinstance(node, ArrayObject):
                stack.extend((value, depth + 1) for value in node)


_STREAM_DATA = re.compile(rb"stream\r?\n.*?endstream", re.DOTALL)
_NESTING_TOKEN = re.compile(rb"\[|\]|<<|>>")


def _raw_nesting(data: bytes) -> int:
    """The deepest nesting of arrays and dictionaries in the file's objects, stream contents
    left out. pypdf drops what it cannot parse, so a bomb could otherwise reach Claude."""
    depth = deepest = 0
    for match in _NESTING_TOKEN.finditer(_STREAM_DATA.sub(b"", data)):
        if match.group() in (b"[", b"<<"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_OBJECT_DEPTH:
                    break
        else:
            depth = max(0, depth - 1)
    return deepest


def _declared_pages(reader: object) -> int | None:
    """/Count of the page tree root, read before the tree is walked (a bomb can claim millions)."""
    try:
        count = reader.trailer["/Root"]["/Pages"]["/Count"]  # type: ignore[attr-defined]
    except Exception:
        return None
    return int(count) if isinstance(count, int) else None


def main() -> int:
    limit_this_process()
    data = sys.stdin.buffer.read()
    try:
        result: dict[str, object] = {"pages": inspect(data)}
    except PdfRejected as exc:
        result = {"rejected": exc.reason}
    except MemoryError:
        result = {"rejected": "pdf_too_complex"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
