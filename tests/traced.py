"""What code of ours still holds in memory, measured with tracemalloc (started by the test)."""

from __future__ import annotations

import gc
import tracemalloc


def bytes_held_by(pattern: str) -> int:
    """Bytes that code whose file matches `pattern` allocated since tracemalloc started and that
    are still alive after a full collection."""
    gc.collect()
    ours = tracemalloc.Filter(True, pattern)
    snapshot = tracemalloc.take_snapshot().filter_traces([ours])
    return sum(stat.size for stat in snapshot.statistics("filename"))
