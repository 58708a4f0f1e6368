"""`python -m bot.health`: the container healthcheck. Exits 0 when the running bot's poll loop
touched its heartbeat file recently, 1 otherwise. Imports nothing heavy: it runs every 30 s."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

HEARTBEAT_FILE = "heartbeat"
# The poll loop touches the file at least once a long poll (POLLING_TIMEOUT_SECONDS, at most 50 s,
# plus the request's margin); older than this, the loop is stuck or gone.
MAX_AGE_SECONDS = 120.0


def heartbeat_path(data_dir: Path) -> Path:
    return data_dir / HEARTBEAT_FILE


def check(
    data_dir: Path, *, max_age: float = MAX_AGE_SECONDS, now: float | None = None
) -> str | None:
    """None when healthy, else what is wrong."""
    path = heartbeat_path(data_dir)
    try:
        age = (now if now is not None else time.time()) - path.stat().st_mtime
    except FileNotFoundError:
        return f"no heartbeat at {path}: the bot has not started polling"
    if age > max_age:
        return f"the heartbeat at {path} is {age:.0f} s old: the poll loop is stuck"
    return None


def main() -> int:
    problem = check(Path(os.environ.get("DATA_DIR") or "data"))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
