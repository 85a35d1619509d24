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
import random
from collections.abc import Callable
from dataclasses import dataclass

from fastxfer.budget import ConnectionBudget
from fastxfer.clock import Clock
from fastxfer.errors import InvalidConfig
from fastxfer.tokenbucket import TokenBucket, check_rate


class RequestRateLimiter:
    """Requests-per-second cap (``--tps``): ``tps`` per second, bursts of ``burst``.

    Unlike a bandwidth bucket it starts full, as golang.org/x/time/rate (behind
    rclone's ``--tpslimit``) does: the first ``burst`` requests go at once.
    ``tps`` 0 means unlimited.
    """

    def __init__(self, tps: float, burst: int, clock: Clock) -> None:
        if burst < 1:
            raise InvalidConfig(f"request burst must be >= 1, got {burst}", hint="e.g. 10")
        self._bucket = TokenBucket(check_rate(tps, "tps"), burst, clock, initial=burst)

    async def acquire(self) -> None:
        """Wait for permission to send one request."""
        await self._bucket.acquire(1)


class AimdController:
    """Additive-increase / multiplicative-decrease concurrency limit, driven by SlowDown.

    ``on_throttle`` halves ``limit`` at most once per ``cooldown`` seconds (the
    requests already in flight when S3 starts answering 503 count once);
    ``on_success`` adds 1 per ``limit`` successes (one per window).
    :meth:`backoff_delay` says how long to pause after a throttle.
    """

    def __init__(
        self,
        initial: int,
        *,
        clock: Clock,
        min_limit: int = 1,
        max_limit: int | None = None,
        cooldown: float = 1.0,
        base_delay: float = 0.1,
        max_delay: float = 20.0,  # botocore's cap on retry backoff
        random: Callable[[], float] = random.random,
    ) -> None:
        max_limit = initial if max_limit is None else max_limit
        if not 1 <= min_limit <= initial <= max_limit:
            raise InvalidConfig(
                f"need 1 <= min_limit <= initial <= max_limit, got "
                f"{min_limit}, {initial}, {max_limit}",
                hint="the initial limit is usually the configured concurrency",
            )
        self._limit, self._min, self._max = initial, min_limit, max_limit
        self._cooldown, self._base, self._max_delay = cooldown, base_delay, max_delay
        self._clock, self._random = clock, random
        self._successes = 0
        self._level = 0  # throttles (outside cooldown) since the last success
        self._retry_after = 0.0
        self._last_decrease: float | None = None

    @property
    def limit(self) -> int:
        return self._limit

    def on_success(self) -> None:
        self._level, self._retry_after = 0, 0.0
        self._successes += 1
        if self._successes >= self._limit:
            self._successes = 0
            self._limit = min(self._max, self._limit + 1)

    def on_throttle(self, retry_after: float | None = None) -> None:
        """Record a SlowDown/503; ``retry_after`` is the server's hint in seconds."""
        if retry_after is not None:
            self._retry_after = max(self._retry_after, retry_after)
        now = self._clock.monotonic()
        if self._last_decrease is not None and now - self._last_decrease < self._cooldown:
            return
        self._last_decrease = now
        self._limit = max(self._min, self._limit // 2)
        self._successes = 0
        self._level += 1

    def backoff_delay(self) -> float:
        """Seconds to wait before the next request; 0 unless throttled since the last success.

        ``base * 2**(n-1)`` for the n-th throttle, jittered into its upper half,
        at least Retry-After, and never more than ``max_delay``.
        """
        if self._level == 0:
            return 0.0
        ceiling = min(self._max_delay, self._base * 2.0 ** min(self._level - 1, 60))
        jittered = ceiling * (0.5 + 0.5 * self._random())
        return min(self._max_delay, max(jittered, self._retry_after))


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
        self._tuned = connections.limit
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

    def set_tuned(self, limit: int) -> None:
        """The goodput tuner's limit (:mod:`fastxfer.tuning`); SlowDown's may be lower."""
        self._tuned = limit
        self._apply()

    def _apply(self) -> None:
        limit = min(self._tuned, self._requests.limit) if self.adaptive else self._tuned
        if limit != self.connections.limit:
            self.connections.set_limit(limit)

    def on_success(self) -> None:
        self._requests.on_success()
        self._apply()

    def on_throttle(self, retry_after: float | None = None) -> None:
        """A request was answered SlowDown / 503 / throttling."""
        self.throttles += 1
        self._requests.on_throttle(retry_after)
        self._apply()
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
