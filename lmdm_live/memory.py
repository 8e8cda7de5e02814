"""Giving freed memory back to the system while the instrument plays.

Nothing in Python grows over a long set (a 5-minute soak at 200 changes a second held no more live objects
at the end than its bounded caches hold after the first minute), yet resident memory crept up a few MB a
minute: glibc keeps
the heap that torch frees for reuse, and the churn of a live set (a 1 MB conditioning made for each new
prompt and dropped later, block activations, on several threads) leaves it fragmented, so the free part
stays resident. After `malloc_trim(0)` it was flat. So the engine calls `trim()` every few seconds, while
its thread waits for the ring to drain (never in the audio callback).
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc = None


def trim() -> bool:
    """Hand the heap's free pages back to the system; False where the C library has no malloc_trim."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True
