"""Background CPU work (decoding images, parsing image answers) at a lower scheduling priority
than the event loop that serves people's turns: on a busy machine the kernel runs a chat turn's
next step first, and the image work takes the CPU time left over (it still gets all of it when
nothing else needs it)."""

from __future__ import annotations

import contextlib
import os
import threading

BACKGROUND_NICENESS = 10
MAX_NICENESS = 19


def lower_this_thread() -> None:
    """The calling thread only (on Linux a thread's id works as a process id here); nothing
    where the system does not allow it."""
    with contextlib.suppress(OSError, AttributeError):
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(MAX_NICENESS, current + BACKGROUND_NICENESS))


def lower_this_process() -> None:
    with contextlib.suppress(OSError, AttributeError):
        os.nice(BACKGROUND_NICENESS)
