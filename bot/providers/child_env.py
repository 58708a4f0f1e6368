"""The environment the bot's helper processes (the image worker, the PDF checker) start with:
the bot's own, without anything that looks like a secret. What a child needs from the
configuration it is given on its stdin; a PDF checker subverted by a hostile file, or a crash
report of the worker, then has no token, key or password to give away."""

from __future__ import annotations

import os
import re

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|DATABASE_URL|_DSN$", re.IGNORECASE)


def child_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not SECRET_NAME.search(name)}
