"""The PDF checker, run as a long-lived child process: `python -m bot.services.pdf_check` imports
pypdf once, writes `{"ready": true}`, then serves checks one at a time. Each request on stdin is
an 8-byte big-endian length and the PDF's bytes; each answer is one JSON line, `{"pages": n}` or
`{"rejected": reason}`, with `"retire": true` when the process should be replaced (it grew large
or ran out of memory). End of stdin ends the process, so it never outlives the bot.

The child sets hard limits on itself before it reads anything (address space; no core files),
and a CPU-time limit before each check, and the parent kills it after a deadline, so a PDF bomb
costs a bounded share of one core and of memory and never touches the bot's process; pypdf
(15-25 MB once imported) stays out of the bot.

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
import signal
import sys
from pathlib import Path
from typing import BinaryIO

MEBIBYTE = 1024 * 1024
MAX_PDF_PAGES = 100  # Claude's limit for a request under a 1M-token context window
PDF_CHECK_CPU_SECONDS = 10  # per check
PDF_CHECK_MEMORY_BYTES = 768 * MEBIBYTE  # address space of the child
RETIRE_PEAK_RSS_BYTES = 192 * MEBIBYTE  # a child that grew past this is replaced after its check
LENGTH_BYTES = 8


class PdfRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def limit_this_process(memory_bytes: int = PDF_CHECK_MEMORY_BYTES) -> None:
    """Hard limits the child sets on itself before it reads any PDF: address space, no core
    files (the CPU limit's signal would otherwise dump one), and Ctrl-C left to the bot."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def limit_next_check(cpu_seconds: int = PDF_CHECK_CPU_SECONDS) -> None:
    """CPU time for the next check: the process is stopped (SIGXCPU) once it has used
    `cpu_seconds` more than it has so far. The hard limit is left as it is, so that later
    checks can be given their own allowance."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime) + 1 + cpu_seconds
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


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


def answer(data: bytes) -> dict[str, object]:
    """The verdict on one PDF, and whether this process should be replaced after it."""
    try:
        result: dict[str, object] = {"pages": inspect(data)}
    except PdfRejected as exc:
        result = {"rejected": exc.reason}
    except MemoryError:
        result = {"rejected": "pdf_too_complex"}
    if _peak_rss_bytes() > RETIRE_PEAK_RSS_BYTES or result.get("rejected") == "pdf_too_complex":
        result["retire"] = True
    return result


def _peak_rss_bytes() -> int:
    """This process's peak resident memory since it started (VmHWM; getrusage would also count
    the bot's, inherited through fork). 0 where /proc is not there."""
    try:
        with Path("/proc/self/status").open("rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _read_request(stream: BinaryIO) -> bytes | None:
    """The next PDF, or None at the end of input (the bot closed the pipe or is gone)."""
    header = stream.read(LENGTH_BYTES)
    if len(header) < LENGTH_BYTES:
        return None
    size = int.from_bytes(header, "big")
    data = stream.read(size)
    return data if len(data) == size else None


def serve(requests: BinaryIO, answers: BinaryIO, cpu_seconds: int) -> None:
    import pypdf  # noqa: F401  (imported once, before the first check)

    answers.write(b'{"ready": true}\n')
    answers.flush()
    while (data := _read_request(requests)) is not None:
        limit_next_check(cpu_seconds)
        answers.write(json.dumps(answer(data)).encode() + b"\n")
        answers.flush()
        del data


def main(argv: list[str]) -> int:
    cpu_seconds = int(argv[0]) if argv else PDF_CHECK_CPU_SECONDS
    memory_bytes = int(argv[1]) if len(argv) > 1 else PDF_CHECK_MEMORY_BYTES
    limit_this_process(memory_bytes)
    serve(sys.stdin.buffer, sys.stdout.buffer, cpu_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
