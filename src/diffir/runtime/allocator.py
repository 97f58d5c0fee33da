"""Keep freed memory mapped between layers.

With glibc's defaults every activation larger than a few hundred KiB is a fresh ``mmap`` and every free hands
the pages back: a ×4 SR forward then spends about 2 million minor page faults re-zeroing memory it just had,
which costs as much as the arithmetic (measured: ×1.8 on a whole restore).  Raising the mmap and trim
thresholds from inside the process (``mallopt``) makes freed blocks reusable, with no ``LD_PRELOAD`` and no
environment variable for the user.  The price is that the process keeps its peak heap until it exits, which
is what a restore or a training run wants.  Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: Allocations up to this size come from the heap (glibc caps the threshold; larger still use mmap).
_MMAP_THRESHOLD = 1 << 30
_TOP_PAD = 1 << 28
_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes a C int
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds once per process; True if they are in effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = all(
        mallopt(option, value) == 1
        for option, value in (
            (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD),
            (_M_TOP_PAD, _TOP_PAD),
        )
    )
    return _done
