"""The bot's helper processes (the image worker, the PDF checker): the environment they start
with, and whether one has exited. The environment is the bot's own without anything that looks
like a secret (what a child needs of the configuration comes on its stdin): a PDF checker
subverted by a hostile file, or a crash report of the worker, has no token, key or password to
give away."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|DATABASE_URL|_DSN$", re.IGNORECASE)


def child_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not SECRET_NAME.search(name)}


def has_exited(process: asyncio.subprocess.Process) -> bool:
    """Whether a child has exited, also before asyncio has reaped it (a zombie, or gone): a
    child killed from outside is then replaced before it is given work it would never answer."""
    if process.returncode is not None:
        return True
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        return False  # no /proc here: only the returncode tells
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")
