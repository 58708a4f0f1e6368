"""The PDF check as a child process: `python -m bot.services.pdf_check` reads a PDF on stdin and
writes one JSON line, `{"pages": n}` or `{"rejected": reason}`.

It runs under hard limits set before it starts (CPU seconds and address space), and the parent
kills it on a timeout, so a PDF bomb costs a bounded amount of one core and memory and never
touches the bot's own process; pypdf (about 15-25 MB once imported) stays out of the bot too.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    from bot.services.documents import DocumentRejected, inspect_pdf, limit_this_process

    limit_this_process()
    data = sys.stdin.buffer.read()
    try:
        info = inspect_pdf(data)
    except DocumentRejected as exc:
        result: dict[str, object] = {"rejected": exc.reason}
    except MemoryError:
        result = {"rejected": "pdf_too_complex"}
    else:
        result = {"pages": info.pages}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
