"""FakeClock: virtual time for tests (never used by production code)."""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools


class FakeClock:
    """Virtual time for tests.

    ``sleep(s)`` registers a deadline ``monotonic() + s`` and waits; sleepers are
    woken strictly in deadline order (FIFO for equal deadlines), and the clock
    jumps to each deadline as it is woken, so tasks sleeping concurrently see
    the same times they would in real time.  Time moves only:

    * with ``auto_advance=True`` (default): a helper task, alive only while someone
      sleeps, lets the loop run ``idle_yields`` turns (enough for woken tasks to
      reach their next ``await``) and then jumps to the earliest deadline; or
    * with ``await clock.advance(seconds)``, which wakes every deadline up to
      ``monotonic() + seconds`` in order, letting the loop settle after each.

    Auto-advance treats the loop as idle after ``idle_yields`` turns, so code that
    waits on real I/O while someone sleeps on this clock sees time race ahead;
    use ``auto_advance=False`` for step-by-step tests.  ``now()`` is
    ``start + monotonic()`` (start defaults to Monday 2024-01-01 00:00, naive).
    """

    def __init__(
        self,
        start: datetime.datetime | None = None,
        *,
        auto_advance: bool = True,
        idle_yields: int = 20,
    ) -> None:
        self._start = start or datetime.datetime(2024, 1, 1)
        self._now = 0.0
        self._auto = auto_advance
        self._idle_yields = idle_yields
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def monotonic(self) -> float:
        return self._now

    def now(self) -> datetime.datetime:
        return self._start + datetime.timedelta(seconds=self._now)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        if self._auto and (self._driver is None or self._driver.done()):
            self._driver = loop.create_task(self._drive())
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking sleepers in deadline order."""
        target = self._now + seconds
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            self._wake_earliest()
            await self._settle()
        self._now = max(self._now, target)

    async def _settle(self) -> None:
        for _ in range(self._idle_yields):
            await asyncio.sleep(0)

    def _wake_earliest(self) -> None:
        deadline, _, fut = heapq.heappop(self._sleepers)
        if not fut.done():  # skip sleepers that were cancelled
            self._now = max(self._now, deadline)
            fut.set_result(None)

    async def _drive(self) -> None:
        while True:
            await self._settle()
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                return
            self._wake_earliest()
