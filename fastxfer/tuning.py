"""A connection count that tunes itself from measured goodput.

More requests in flight is what makes S3 fast over a long path (each
connection is limited by its round trip and window: 40 ms and 8 MB/s a
connection need 64 of them for 500 MB/s); on a short path the machine is the
limit, and connections beyond that only cost CPU on both sides.

The count starts at ``short_start`` (8), and the first answers decide the
path (the time from sending a request to its answer's headers, measured on
the wire: botocore's before-send to response-received): when the first HEAD
or CreateMultipartUpload, or the fastest of the first three GET headers, came
back within ``SHORT_PATH`` (20 ms; 60 ms for the session's very first request,
which also opens the first connection) the server is close and the machine
will be the limit, so 8 stays (1 GiB from rclone on loopback, medians of 3:
953-1013 MB/s at 4, 957-980 at 8, 827-969 at 16, 776-834 at 64); a slower
answer means a long path, which needs the whole budget at once (512 MiB over
the WAN profile: 121 MB/s at 16, 216 at 32, 218 at 64).

On a short path large downloads also take fewer streams than the count
allows (:attr:`ConcurrencyTuner.streams`, ``SHORT_STREAMS`` to start with):
there one stream carries a ranged GET as fast as the machine can take it in,
and the event loop that reads every stream is the limit, so each stream past
a few only adds work on both sides (1 GiB from rclone on loopback, medians
of interleaved rounds: 1 range in flight 877 MB/s, 2: 1,017, 3: 1,068, 4:
990, 8: 905; then with this cap, 2: 1,122, 3: 1,094, 4: 1,074; then 2: 1,164
vs 4: 1,124 over 6 rounds, client 0.86 vs 0.90 CPU-s/GiB).  A
path that is short but slow per connection (a server nearby that caps each
stream) leaves the loop idle: while ranges wait for a stream and the loop was
busy less than ``STREAMS_BUSY`` of the last interval, the cap doubles, and once
it reaches the connection count it is lifted (the count governs again).

Then, for transfers long enough to measure, it sheds what does not pay: while
data requests queue for a slot (the limit binds), it measures the bytes moved
per second, lowers the limit by a quarter, waits for the requests above the
new limit to finish, measures again, and keeps the lower limit when goodput
held (within ``tolerance``) or goes back and holds still for a while when it
fell.  After a hold it probes upward the same way (a higher limit kept only
if goodput rose by more than ``tolerance``), so a link that got faster is
used.  Short transfers are never probed: the first probe waits for ``warmup``
seconds of binding demand.  SlowDown still halves the limit at once
(:class:`fastxfer.pacing.Pacer`); the effective limit is the lower of the two.

:class:`ConcurrencyTuner` is the decision logic alone (time and demand are
passed in, so it runs on any clock); the session ticks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastxfer.progress import BaseSubscriber, ProgressEvent

Phase = Literal["warmup", "measure", "drain", "probe", "hold"]

SHORT_PATH = 0.020
"""Answers faster than this (seconds): the server is close."""

FIRST_SHORT_PATH = 0.060
"""The same for the session's first answer, which also pays for opening the first
connection and the HTTP client's first use (~30 ms here on loopback)."""

SHORT_STREAMS = 2
"""Ranged downloads in flight at once on a short path, to start with (module docstring)."""

STREAMS_BUSY = 0.6
"""Below this share of an interval spent running the event loop, the loop has room
for more streams (it was 0.8-0.95 with 2-8 streams from rclone on loopback)."""

PATH_SAMPLES = 3
"""Answers the path is judged on (the fastest of them): one may have waited on a
busy event loop or a busy server, not on the path."""


@dataclass(frozen=True, slots=True)
class TunerStats:
    limit: int
    """The tuned number of requests in flight (before SlowDown's back-off)."""
    phase: Phase
    goodput: float | None
    """Bytes/s measured at ``limit``, when known."""
    probes: int
    changes: int
    latency: float | None = None
    """The fastest control request seen, seconds (what chose the starting count)."""
    streams: int | None = None
    """Ranged downloads allowed in flight on a short path (None: as many as the count)."""


class ConcurrencyTuner(BaseSubscriber):
    """Hill-climbing on goodput; fed by progress events, driven by :meth:`tick`."""

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = 8,
        warmup: float = 3.0,
        window: float = 0.6,
        tolerance: float = 0.05,
        hold: float = 10.0,
        step: float = 0.25,
        short_start: int = 8,
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.limit = min(self.ceiling, max(self.floor, short_start))
        self.warmup = warmup
        self.window = window
        self.tolerance = tolerance
        self.hold_seconds = hold
        self.step = step
        self.short_start = short_start
        self.latency: float | None = None
        """The fastest answer seen (seconds); the first ones chose the path."""
        self.streams: int | None = None
        """Ranged downloads allowed in flight (None: no cap but the count's)."""
        self._streams_waited = False
        self._samples = 0
        self._judged = False
        self.phase: Phase = "warmup"
        self.goodput: float | None = None
        self.probes = 0
        self.changes = 0
        self._bytes = 0
        self._phase_started: float | None = None
        self._window_bytes = 0
        self._window_time = 0.0
        self._last_tick: float | None = None
        self._before: tuple[int, float] | None = None  # (limit, goodput) before a probe
        self._next_up = False

    @property
    def judged(self) -> bool:
        """Whether the first answers have decided the path (no more samples needed)."""
        return self._judged

    # -- input -------------------------------------------------------------------

    def on_progress(self, event: ProgressEvent) -> None:
        if event.bytes_delta > 0:
            self._bytes += event.bytes_delta

    def observe_latency(self, seconds: float, *, alone: bool = False) -> int | None:
        """The time from sending a request to its answer's headers (no body in it).

        The path is judged once: on the first ``alone`` answer (a HEAD or a
        CreateMultipartUpload, which do not compete with data for the event loop),
        else on the fastest of the first :data:`PATH_SAMPLES` (GET headers, which
        may have waited on a loop busy with other bodies).  Returns the whole
        budget for a long path, else None (the start stays).
        """
        self._samples += 1
        self.latency = seconds if self.latency is None else min(seconds, self.latency)
        if self._judged or (self._samples < PATH_SAMPLES and not alone):
            return None
        self._judged = True
        if self.latency < (FIRST_SHORT_PATH if self._samples == 1 else SHORT_PATH):
            if self.limit > SHORT_STREAMS:
                self.streams = SHORT_STREAMS
            return None
        if self.phase != "warmup" or self.limit >= self.ceiling:
            return None
        self.limit = self.ceiling
        self.changes += 1
        return self.limit

    # -- decisions -----------------------------------------------------------------

    def tick_streams(self, busy: float, *, waiting: int) -> bool:
        """One look at the stream cap: ``busy`` is the share of the last interval
        the event loop spent running, ``waiting`` the ranged downloads waiting
        for a stream now.  Returns whether :attr:`streams` changed (None: lifted).

        An interval counts only when ranges waited at both its ends: one in
        which a download began part-way through was partly idle for want of
        work, not for want of streams.
        """
        waited, self._streams_waited = self._streams_waited, waiting > 0
        if self.streams is None or not (waited and waiting) or busy >= STREAMS_BUSY:
            return False
        new = self.streams * 2
        self.streams = None if new >= self.limit else new
        self.changes += 1
        return True

    def tick(self, now: float, *, in_use: int, waiting: int) -> int | None:
        """One look at the last interval; returns a new limit to apply, or None.

        ``in_use`` / ``waiting``: requests holding / waiting for a slot now.
        Only intervals in which the limit binds (someone waits) are measured:
        when nothing waits, more slots would not have moved more bytes.
        """
        moved, self._bytes = self._bytes, 0
        last, self._last_tick = self._last_tick, now
        if last is None:
            self._phase_started = now
            return None
        dt = now - last
        if waiting == 0:
            # Not limited by the slot count: nothing to learn; a measurement in
            # progress starts again when demand returns.
            self._window_bytes, self._window_time = 0, 0.0
            if self.phase in ("warmup", "measure", "probe"):
                self._phase_started = now
            return None
        since = now - (now if self._phase_started is None else self._phase_started)
        if self.phase == "warmup":
            if since >= self.warmup:
                self._enter("measure", now)
            return None
        if self.phase == "hold":
            if since >= self.hold_seconds:
                self._enter("measure", now)
            return None
        if self.phase == "drain":
            if in_use <= self.limit:  # the requests above the new limit have finished
                self._enter("probe", now)
            return None
        # measure / probe: add up a window of binding demand.
        self._window_bytes += moved
        self._window_time += dt
        if self._window_time < self.window:
            return None
        rate = self._window_bytes / self._window_time
        self._window_bytes, self._window_time = 0, 0.0
        if self.phase == "measure":
            self.goodput = rate
            return self._start_probe(now, rate)
        return self._judge_probe(now, rate)

    def _start_probe(self, now: float, rate: float) -> int | None:
        if self._next_up:
            new = min(self.ceiling, max(self.limit + 1, round(self.limit * (1 + self.step))))
        else:
            new = max(self.floor, min(self.limit - 1, round(self.limit * (1 - self.step))))
        if new == self.limit:  # at the edge: try the other way next time
            self._next_up = not self._next_up
            self._enter("hold", now)
            return None
        self._before = (self.limit, rate)
        self.probes += 1
        return self._set(new, now, "probe" if new > self.limit else "drain")

    def _judge_probe(self, now: float, rate: float) -> int | None:
        assert self._before is not None
        old_limit, old_rate = self._before
        self._before = None
        went_up = self.limit > old_limit
        if went_up:
            kept = rate > old_rate * (1 + self.tolerance)
        else:
            kept = rate >= old_rate * (1 - self.tolerance)
        if kept:  # keep going the same way
            self.goodput = rate
            self._next_up = went_up
            self._enter("measure", now)
            return self._start_probe(now, rate)
        # Worse: back to where it was, and rest before trying the other way.
        self.goodput = old_rate
        self._next_up = not went_up
        return self._set(old_limit, now, "hold")

    def _set(self, limit: int, now: float, phase: Phase) -> int:
        self.limit = limit
        self.changes += 1
        self._enter(phase, now)
        return limit

    def _enter(self, phase: Phase, now: float) -> None:
        self.phase = phase
        self._phase_started = now
        self._window_bytes, self._window_time = 0, 0.0

    def stats(self) -> TunerStats:
        return TunerStats(
            self.limit,
            self.phase,
            self.goodput,
            self.probes,
            self.changes,
            self.latency,
            self.streams,
        )
