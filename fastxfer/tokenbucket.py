"""Token buckets: the primitive behind bandwidth caps and the request-rate cap.

Everything time-dependent takes a :class:`~fastxfer.clock.Clock`; asyncio
primitives are created lazily inside the running loop.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final

from fastxfer.clock import Clock
from fastxfer.errors import InvalidConfig
from fastxfer.limits import KiB

# Callers take tokens per chunk rather than per byte or per part.  Each
# acquire() costs a coroutine call and, when the bucket is empty, a wakeup:
# small chunks pace smoothly but cost CPU at high rates; large chunks are cheap
# but let a stream run ahead by up to one chunk and make pacing coarse at low
# rates (256 KiB at 1 MiB/s is a 250 ms step).  256 KiB is what s3transfer uses
# for progress and a good middle; 64 KiB suits limits below ~1 MiB/s.
CHUNK_SIZE: Final = 256 * KiB


def default_burst(rate: float) -> float:
    """Bucket capacity in bytes for a cap of ``rate`` bytes/s: ``max(CHUNK_SIZE, rate / 10)``.

    At least one chunk, so a chunk is never split (rclone: the burst must exceed
    the largest single read); and 100 ms of traffic, so at high rates the bucket
    wakes at most ~10 times a second while any 1 s window overshoots the cap by
    at most 10 %.
    """
    return max(float(CHUNK_SIZE), rate / 10)


def check_rate(rate: float, what: str) -> float:
    if not math.isfinite(rate) or rate < 0:
        raise InvalidConfig(
            f"{what} must be a finite number >= 0 bytes/s, got {rate!r}",
            hint="use 0 for unlimited",
        )
    return float(rate)


def check_burst(burst: float, what: str) -> float:
    if not math.isfinite(burst) or burst <= 0:
        raise InvalidConfig(f"{what} must be > 0, got {burst!r}", hint="e.g. 1MiB")
    return float(burst)


class TokenBucket:
    """Token bucket: ``rate`` tokens (bytes) per second, capacity ``burst``.

    Starts empty, so there is no burst in the first second (rclone does the
    same).  ``rate`` 0 means unlimited.  Waiters are served FIFO; only the head
    of the queue sleeps, and :meth:`set_rate` wakes it so a timetable switch
    applies mid-transfer.

    A request larger than ``burst`` is taken in slices of at most ``burst``
    while it holds the head of the queue: it proceeds at the cap (a 16 MiB part
    through a 1 MiB bucket takes 16 s at 1 MiB/s) instead of deadlocking, and
    no debt is left for later callers.  If the caller is cancelled, the slices
    already taken are given back (up to ``burst``), so nothing leaks.
    """

    # Float rounding: after sleeping the computed time the bucket may still be
    # short by (ulp of the clock) x rate tokens, and the next sleep may be too
    # small to move the clock at all.  One microsecond's worth of tokens is
    # "enough"; it covers clocks up to ~10^9 s.
    _SLACK_SECONDS: Final = 1e-6

    def __init__(self, rate: float, burst: float, clock: Clock, *, initial: float = 0.0) -> None:
        self._rate = check_rate(rate, "rate")
        self._burst = check_burst(burst, "burst")
        self._tokens = min(max(initial, 0.0), self._burst)
        self._clock = clock
        self._last: float | None = None  # set on first use, inside the loop
        self._lock: asyncio.Lock | None = None
        self._sleeper: asyncio.Task[None] | None = None
        self._queued = 0  # callers on the slow path, including the head

    @property
    def rate(self) -> float:
        """Current cap in tokens (bytes) per second; 0 = unlimited."""
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    @property
    def waiting(self) -> int:
        """Callers waiting for tokens, including the one being served."""
        return self._queued

    def set_rate(self, rate: float | None, burst: float | None = None) -> None:
        """Change the cap (0 or None = unlimited) and optionally the capacity; wakes waiters."""
        rate = check_rate(rate or 0.0, "rate")
        if self._last is not None:
            self._refill()  # tokens earned so far count at the old rate
        self._rate = rate
        if burst is not None:
            self._burst = check_burst(burst, "burst")
            self._tokens = min(self._tokens, self._burst)
        if self._sleeper is not None:
            self._sleeper.cancel()

    def refund(self, n: float) -> None:
        """Give back ``n`` tokens taken but not used (capped at ``burst``)."""
        self._tokens = min(self._burst, self._tokens + max(n, 0.0))

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` tokens (bytes) may go, then take them."""
        if n < 0:
            raise ValueError(f"cannot acquire a negative number of tokens ({n})")
        if n == 0 or (self._rate == 0 and self._queued == 0):
            return
        self._refill()
        if self._queued == 0 and self._has(n):
            self._tokens -= n
            return
        if self._lock is None:
            self._lock = asyncio.Lock()  # FIFO, and passes on when a waiter is cancelled
        self._queued += 1
        try:
            async with self._lock:
                await self._take(n)
        finally:
            self._queued -= 1

    async def _take(self, n: int) -> None:
        taken = 0.0
        try:
            while taken < n:
                if self._rate == 0:
                    return
                self._refill()
                want = min(n - taken, self._burst)
                if self._has(want):
                    self._tokens -= want
                    taken += want
                else:
                    await self._sleep((want - self._tokens) / self._rate)
        except asyncio.CancelledError:
            self.refund(taken)
            raise

    async def _sleep(self, seconds: float) -> None:
        # A task so that set_rate() can cut the sleep short without cancelling us.
        sleeper = asyncio.create_task(self._clock.sleep(seconds))
        self._sleeper = sleeper
        try:
            await asyncio.wait((sleeper,))
        finally:
            self._sleeper = None
            sleeper.cancel()

    def _has(self, n: float) -> bool:
        return self._tokens + 1e-6 + self._rate * self._SLACK_SECONDS >= n

    def _refill(self) -> None:
        now = self._clock.monotonic()
        if self._last is not None and self._rate > 0:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
