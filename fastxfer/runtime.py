"""Process-level tuning for the ``fastxfer`` command (not applied on library import).

Both settings are measured (README "Performance notes"); an application that
embeds fastxfer may call :func:`tune_process` itself.

* glibc malloc: every socket read allocates a new ``bytes`` object of up to
  256 KiB.  Above glibc's mmap threshold (128 KiB) each one is a fresh mmap,
  page-faulted and zeroed, then unmapped; with the default trim threshold
  freed heap memory is also returned to the kernel and faulted in again.
  Raising both keeps that memory in the heap: ~100,000 fewer page faults and
  ~0.4 s less kernel CPU per GiB downloaded here.
* The cyclic garbage collector: every request allocates hundreds of
  container objects (botocore dicts, aiohttp messages), so with the default
  threshold of 700 the collector ran several times per request and took ~7%
  of the CPU profile of an upload.  Requests make almost no cycles; a
  threshold of 50,000 makes collections rare without letting garbage pile up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Keep freed memory in the heap (glibc only).  Returns True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024))
    ok &= bool(mallopt(_M_TRIM_THRESHOLD, 256 * 1024 * 1024))
    ok &= bool(mallopt(_M_TOP_PAD, 16 * 1024 * 1024))
    return ok


def tune_gc() -> None:
    gc.set_threshold(50_000, 20, 20)


def tune_process() -> None:
    """What the ``fastxfer`` command applies at start (see the module docstring)."""
    tune_malloc()
    tune_gc()
