"""Driving the concurrency tuner: what it is fed and what is done with its decisions.

:class:`fastxfer.tuning.ConcurrencyTuner` decides; a :class:`Tuning` (one per
session, while ``autotune`` is on) gives it the path probe (each early
request's time from send to answer headers, from botocore's events and the
lean path's), ticks it every ``TUNE_TICK`` seconds with the demand for slots
and the share of the tick the event loop was busy, and applies what it
decides: the connection count (through the pacer) and the cap on ranged
downloads in flight (:attr:`Tuning.streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from fastxfer.budget import AdjustableSemaphore, ConnectionBudget
from fastxfer.pacing import Pacer
from fastxfer.tuning import ConcurrencyTuner

log = logging.getLogger("fastxfer")

TUNE_TICK = 0.2
"""Seconds between two looks of the concurrency tuner at the connection budget."""

PATH_OPS = frozenset({"HeadObject", "HeadBucket", "CreateMultipartUpload", "GetObject"})
"""Requests whose answer's headers come back after a round trip and the server's
work, with no body sent first: the tuner reads the path from their times."""

_UNCAPPED = 1 << 30
"""A stream cap that never binds (the downloads started under a cap keep it)."""


class Tuning:
    """Feeds ``tuner`` and applies its decisions to ``connections`` (via ``pacer``)."""

    def __init__(
        self,
        tuner: ConcurrencyTuner,
        connections: ConnectionBudget,
        pacer: Pacer,
        queued: Callable[[], int],
    ) -> None:
        self.tuner = tuner
        self._connections = connections
        self._pacer = pacer
        self._queued = queued
        """Transfers waiting to start (demand beyond the slots)."""
        self._sent_at: dict[str, float] = {}
        self.streams: AdjustableSemaphore | None = None
        """The cap on ranged downloads in flight (a stream is taken before a
        connection), while the tuner has one: on a short path, until the loop
        shows room for more (fastxfer/tuning.py).  None: no cap."""
        pacer.set_tuned(tuner.limit)

    @contextlib.asynccontextmanager
    async def ticking(self) -> AsyncIterator[None]:
        """Tick the tuner every TUNE_TICK seconds while the session is open.

        On the real clock, not the session's: goodput is bytes per real second
        (and a FakeClock must not be driven by a background ticker).
        """
        task = asyncio.create_task(self._run(), name="fastxfer-tuner")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        tuner, connections = self.tuner, self._connections
        # This task runs on the loop's thread: its CPU time is the loop's.
        cpu, wall = time.thread_time(), time.monotonic()
        while True:
            await asyncio.sleep(TUNE_TICK)
            now, now_cpu = time.monotonic(), time.thread_time()
            busy = (now_cpu - cpu) / max(now - wall, 1e-9)
            cpu, wall = now_cpu, now
            new = tuner.tick(
                now,
                in_use=connections.in_use,
                waiting=connections.waiting + self._queued(),
            )
            if new is not None:
                log.debug("tuned requests in flight: %d (%s)", new, tuner.phase)
                self._pacer.set_tuned(new)
            streams = self.streams
            if streams is not None and tuner.tick_streams(busy, waiting=streams.waiting):
                if tuner.streams is None:
                    # Lifted: the downloads under way stop waiting for a stream
                    # (they wait for connections, where the tuner sees the
                    # demand); later ones take none.
                    log.debug("ranged downloads: no cap (loop busy %.2f)", busy)
                    streams.set_limit(_UNCAPPED)
                    self.streams = None
                else:
                    log.debug("ranged downloads in flight: %d", tuner.streams)
                    streams.set_limit(tuner.streams)

    # -- the path probe -------------------------------------------------------

    def on_before_send(self, request: Any, event_name: str, **kwargs: Any) -> None:
        """botocore is about to send a request: note when, for the tuner's path probe
        (only until the path is judged: afterwards requests pay nothing for it)."""
        if self.tuner.judged or event_name.rpartition(".")[2] not in PATH_OPS:
            return
        invocation = request.headers.get("amz-sdk-invocation-id")
        if invocation is not None:
            key = invocation.decode() if isinstance(invocation, bytes) else str(invocation)
            self._sent_at[key] = time.monotonic()

    def on_response_received(
        self, context: Mapping[str, Any], exception: Any, event_name: str, **kwargs: Any
    ) -> None:
        """Its answer's headers are in: the round trip on the wire (no client set-up)."""
        invocation = (context.get("retries") or {}).get("invocation-id")
        sent = self._sent_at.pop(str(invocation), None) if invocation else None
        if sent is None or exception is not None:
            return
        self.observe_path(event_name.rpartition(".")[2], time.monotonic() - sent)

    def observe_path(self, op: str, seconds: float) -> bool:
        """A request's time from send to answer headers (both request paths report
        here).  Returns whether more are wanted: False once the path is judged."""
        tuner = self.tuner
        if tuner.judged:
            return False
        if op not in PATH_OPS:
            return True
        new = tuner.observe_latency(seconds, alone=op != "GetObject")
        if new is not None:
            log.debug("long path (%.1f ms): %d requests in flight", seconds * 1e3, new)
            self._pacer.set_tuned(new)
        if tuner.streams is not None and self.streams is None:
            log.debug("short path: %d ranged downloads in flight", tuner.streams)
            self.streams = AdjustableSemaphore(tuner.streams)
        return not tuner.judged
