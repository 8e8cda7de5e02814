"""Giving freed memory back to the system while the instrument plays.

Nothing in Python grows over a long set (a 5-minute soak at 200 changes a second held no more live objects
at the end than its bounded caches hold after the first minute), yet resident memory crept up a few MB a
minute: glibc keeps
the heap that torch frees for reuse, and the churn of a live set (a 1 MB conditioning made for each new
prompt and dropped later, block activations, on several threads) leaves it fragmented, so the free part
stays resident. After `malloc_trim(0)` it was flat. So the engine calls `trim()` every few seconds, while
its thread waits for the ring to drain (never in the audio callback).

That still left about 1 MB a minute over 10 minutes: glibc raises its mmap threshold each time a large
mmapped block is freed (up to 32 MB), after which the large, short-lived tensors of every block come from
the heap and fragment it. `mmap_large()` fixes the threshold, so they are mapped and unmapped whole.
At 256 KiB it also mapped the many mid-sized tensors of every step, each one a system call and fresh pages
to fault in: a small model made its blocks 1.4-1.8 times slower. At 4 MiB they come from the heap again
and blocks take what they took with no threshold, while the large ones are still mapped whole.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_libc = None


M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def _lib():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
            _libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):
            _libc = False
    return _libc


def mmap_large(threshold: int = 4 * 1024 * 1024) -> bool:
    """Serve allocations of `threshold` bytes and more by mmap, always (a fixed threshold)."""
    lib = _lib()
    return bool(lib) and bool(lib.mallopt(M_MMAP_THRESHOLD, int(threshold)))


def trim() -> bool:
    """Hand the heap's free pages back to the system; False where the C library has no malloc_trim."""
    lib = _lib()
    if not lib:
        return False
    lib.malloc_trim(0)
    return True
