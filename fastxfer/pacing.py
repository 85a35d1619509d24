"""The pacer: when the next request may go.

rclone's lib/pacer split, in asyncio: the caller decides *whether* a failure
is retryable; the pacer decides *when* the next request goes.  It owns the
requests-per-second cap and the adaptive limits (AIMD): on SlowDown the
connection budget is halved and requests pause for a jittered back-off (at
least the server's Retry-After); while requests succeed the limit climbs back
by one per window.  A second AIMD limit applies to concurrent multipart
uploads, because some servers (and S3 per prefix) throttle CreateMultipartUpload
on the number of open uploads rather than the request rate.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from fastxfer.budget import ConnectionBudget
from fastxfer.throttle import AimdController, Clock, RequestRateLimiter


@dataclass(frozen=True, slots=True)
class PacerStats:
    connection_limit: int
    upload_limit: int
    throttles: int
    paused_seconds: float


class Pacer:
    def __init__(
        self,
        *,
        connections: ConnectionBudget,
        uploads: ConnectionBudget,
        clock: Clock,
        tps: float = 0.0,
        tps_burst: int = 0,
        adaptive: bool = True,
    ) -> None:
        self.clock = clock
        self.connections = connections
        self.uploads = uploads
        self.adaptive = adaptive
        self._requests = AimdController(connections.limit, clock=clock)
        self._uploads = AimdController(uploads.limit, clock=clock)
        self._rate = (
            RequestRateLimiter(tps, max(1, tps_burst or int(tps)), clock) if tps > 0 else None
        )
        self._pause_until = 0.0
        self._upload_waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.throttles = 0
        self.paused = 0.0

    async def before_request(self) -> None:
        """Wait for the request-rate cap and any back-off in force."""
        if self._rate is not None:
            await self._rate.acquire()
        delay = self._pause_until - self.clock.monotonic()
        if delay > 0:
            self.paused += delay
            await self.clock.sleep(delay)

    def on_success(self) -> None:
        self._requests.on_success()
        if self.adaptive:
            self.connections.set_limit(self._requests.limit)

    def on_throttle(self, retry_after: float | None = None) -> None:
        """A request was answered SlowDown / 503 / throttling."""
        self.throttles += 1
        self._requests.on_throttle(retry_after)
        if self.adaptive:
            self.connections.set_limit(self._requests.limit)
        self._pause_until = max(
            self._pause_until, self.clock.monotonic() + self._requests.backoff_delay()
        )

    def on_upload_throttle(self, retry_after: float | None = None) -> float:
        """CreateMultipartUpload was throttled: fewer open uploads; returns the back-off."""
        self.throttles += 1
        self._uploads.on_throttle(retry_after)
        if self.adaptive:
            self.uploads.set_limit(self._uploads.limit)
        return max(0.05, self._uploads.backoff_delay())

    def on_upload_done(self) -> None:
        self._uploads.on_success()
        if self.adaptive:
            self.uploads.set_limit(self._uploads.limit)

    def upload_closed(self) -> None:
        """A multipart upload completed or was aborted: the longest-waiting
        throttled create tries now (one, not all: a herd would be throttled again)."""
        while self._upload_waiters:
            fut = self._upload_waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def wait_upload_closed(self, timeout: float) -> None:
        """Wait until an open upload closes, or ``timeout`` seconds at most."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._upload_waiters.append(fut)
        sleeper = asyncio.ensure_future(self.clock.sleep(timeout))
        try:
            await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            fut.cancel()  # left in the deque: skipped as done when reached

    def stats(self) -> PacerStats:
        return PacerStats(
            connection_limit=self.connections.limit,
            upload_limit=self.uploads.limit,
            throttles=self.throttles,
            paused_seconds=round(self.paused, 3),
        )
