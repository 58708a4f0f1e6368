"""How the process's C heap gives memory back (glibc; nothing on another C library). Image work
allocates and frees buffers of tens of megabytes; without this they stay in the heap after use."""

from __future__ import annotations

import functools
from typing import Any, Final

M_MMAP_THRESHOLD: Final = -3  # mallopt's parameter number (glibc)
LARGE_BLOCK_BYTES: Final = 1024 * 1024


@functools.cache
def _libc() -> Any:
    """glibc's functions, or None on another C library."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def return_free_memory() -> None:
    """Give the heap pages a large decode freed back to the system (glibc keeps them otherwise:
    after four 4K images the process held about 400 MB more than it used)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def map_large_blocks_separately() -> None:
    """Blocks of a MiB and more get their own pages, given back to the system when freed.
    glibc's default threshold rises with the first large block freed (up to 32 MB), after which
    the buffers of an image answer (37 MB of base64 JSON, held several times over while the SDK
    parses it) stay in the heap after use: about 90 MB per 4K answer. Called once at start."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES)
