"""Time sources: the real clock and the protocol every waiting component takes.

The pacer, the token buckets and the restore poller take a :class:`Clock`, so
tests run in virtual time (``fastxfer.testing.FakeClock``) and never sleep for
real to test waiting.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Protocol


class Clock(Protocol):
    """Time source; inject ``fastxfer.testing.FakeClock`` in tests."""

    def monotonic(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...
    def now(self) -> datetime.datetime:
        """Wall clock, local time; only used for timetables."""
        ...


class SystemClock:
    """Real time: the running loop's clock, ``asyncio.sleep`` and ``datetime.now()``."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def now(self) -> datetime.datetime:
        return datetime.datetime.now()
