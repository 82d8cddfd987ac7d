"""glibc malloc settings for processes that pass large messages.

Why (issue 19, the bimodal 1 MiB Queue): every message of a pipe or queue
becomes a buffer of its size in Python (the pickle in the sender, the bytes
and the unpickled object in the receiver). glibc serves a 1 MiB request
with a fresh mmap until a free raises its mmap threshold, and from then on
from the heap, whose top it gives back to the kernel (trims) whenever more
than twice that threshold is free there. Whether a given 1 MiB buffer comes
back from the heap or as fresh pages therefore depends on the heap's layout
at that moment: a timing, an extra allocation (an edit of unrelated code, a
different environment) flips a run between the two. Fresh pages cost one
page fault each: 256 per MiB, and a fault costs 5-20 us on this VM, so the
"slow mode" spent ~480 faults (~5 ms) per 1 MiB message in the receiver
alone: 0.17 GB/s instead of 4-5.

:func:`tune` sets the two thresholds to the values glibc's own dynamic
scheme converges to at most (mmap threshold 32 MiB, trim threshold 64 MiB),
at once: buffers up to 32 MiB are reused from the heap, and at most 64 MiB
of free heap top is kept. It does nothing when the user chose malloc
settings (``GLIBC_TUNABLES`` with ``glibc.malloc``, ``MALLOC_*_`` variables),
when ``DRAGON_MALLOC_TUNE=0``, or off glibc.
"""

from __future__ import annotations

import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20

_done = False


def _user_chose() -> bool:
    if os.environ.get("DRAGON_MALLOC_TUNE", "1") == "0":
        return True
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return True
    return any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"))


def tune() -> bool:
    """Applies the settings once per process; whether they are in effect."""
    global _done
    if _done:
        return True
    _done = True
    if _user_chose():
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
