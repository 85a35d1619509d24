"""Throttling: bandwidth token buckets, a weekly timetable, a request-rate cap,
AIMD adaptive concurrency and the adjustable slot pool behind the connection budget.

Everything time-dependent takes a :class:`Clock`, so tests run in virtual time
(:class:`FakeClock`) and never sleep for real.  asyncio primitives are created
lazily inside the running loop, so every object here may be built outside one.

Example::

    limiter = BandwidthLimiter(BandwidthSettings(up=parse_rate("4MiB/s")), SystemClock())
    async with limiter:  # follows the schedule, if any, while the block runs
        for chunk in chunks(part, CHUNK_SIZE):
            await limiter.acquire(len(chunk), "up")
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime
import heapq
import itertools
import math
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from fastxfer.errors import InvalidConfig
from fastxfer.limits import KiB
from fastxfer.units import parse_rate

Direction = Literal["up", "down"]

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


class Clock(Protocol):
    """Time source; inject :class:`FakeClock` in tests."""

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


def _check_rate(rate: float, what: str) -> float:
    if not math.isfinite(rate) or rate < 0:
        raise InvalidConfig(
            f"{what} must be a finite number >= 0 bytes/s, got {rate!r}",
            hint="use 0 for unlimited",
        )
    return float(rate)


def _check_burst(burst: float, what: str) -> float:
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
        self._rate = _check_rate(rate, "rate")
        self._burst = _check_burst(burst, "burst")
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
        rate = _check_rate(rate or 0.0, "rate")
        if self._last is not None:
            self._refill()  # tokens earned so far count at the old rate
        self._rate = rate
        if burst is not None:
            self._burst = _check_burst(burst, "burst")
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


class RequestRateLimiter:
    """Requests-per-second cap (``--tps``): ``tps`` per second, bursts of ``burst``.

    Unlike a bandwidth bucket it starts full, as golang.org/x/time/rate (behind
    rclone's ``--tpslimit``) does: the first ``burst`` requests go at once.
    ``tps`` 0 means unlimited.
    """

    def __init__(self, tps: float, burst: int, clock: Clock) -> None:
        if burst < 1:
            raise InvalidConfig(f"request burst must be >= 1, got {burst}", hint="e.g. 10")
        self._bucket = TokenBucket(_check_rate(tps, "tps"), burst, clock, initial=burst)

    @property
    def tps(self) -> float:
        return self._bucket.rate

    def set_tps(self, tps: float | None) -> None:
        self._bucket.set_rate(tps)

    async def acquire(self) -> None:
        """Wait for permission to send one request."""
        await self._bucket.acquire(1)


# --- weekly timetable -------------------------------------------------------

_DAY_NAMES: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MINUTES_PER_DAY: Final = 24 * 60
_MINUTES_PER_WEEK: Final = 7 * _MINUTES_PER_DAY
_RATE = r"(?P<rate>\d[\d.]*\s*[a-z]*(?:/s)?|[a-z]+)"
_END = r"\s*(?:[,;]|$)"
_OTHERWISE_RE: Final = re.compile(rf"\s*(?:otherwise|else|default)\s+{_RATE}{_END}", re.I)
_RULE_RE: Final = re.compile(
    r"\s*(?:(?P<days>[a-z]+(?:\s*[-,]\s*[a-z]+)*)\s+)?"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s+"
    rf"{_RATE}{_END}",
    re.I,
)
_SCHEDULE_HINT: Final = (
    'e.g. "Mon-Fri 08:00-18:00 4MiB/s, otherwise unlimited" or "22:00-06:00 off"'
)


def _bad(fragment: str, reason: str) -> InvalidConfig:
    return InvalidConfig(f"invalid bandwidth schedule {fragment!r}: {reason}", hint=_SCHEDULE_HINT)


@dataclass(frozen=True)
class ScheduleRule:
    """``rate`` bytes/s on ``days`` (0 = Monday) from ``start`` to ``end`` minutes.

    ``end <= start`` runs overnight: it ends on the next day.
    """

    days: frozenset[int]
    start: int
    end: int
    rate: float


@dataclass(frozen=True)
class Schedule:
    """Weekly bandwidth timetable in local wall-clock time.

    Rules are ``[days] HH:MM-HH:MM rate`` separated by ``,`` or ``;``, plus an
    optional ``otherwise rate`` (default unlimited).  Days: Mon..Sun, lists
    (``Sat,Sun``) and ranges (``Mon-Fri``, ``Fri-Mon``); no days = every day.
    A range whose end is not after its start (``22:00-06:00``) belongs to the
    day it starts on and runs into the next.  Where rules overlap, the later
    one wins.  Rates as in :func:`~fastxfer.units.parse_rate`; ``off`` = unlimited.
    """

    rules: tuple[ScheduleRule, ...]
    default: float = 0.0
    _week: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _changes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One rate per minute of the week: 10,080 floats make lookups trivial.
        week = [self.default] * _MINUTES_PER_WEEK
        for rule in self.rules:
            length = (rule.end - rule.start) % _MINUTES_PER_DAY or _MINUTES_PER_DAY
            for day in rule.days:
                first = day * _MINUTES_PER_DAY + rule.start
                for m in range(first, first + length):
                    week[m % _MINUTES_PER_WEEK] = rule.rate
        changes = tuple(m for m in range(_MINUTES_PER_WEEK) if week[m] != week[m - 1])
        object.__setattr__(self, "_week", tuple(week))
        object.__setattr__(self, "_changes", changes)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        """Parse e.g. ``"Sat,Sun 00:00-24:00 1MiB/s; otherwise 10MiB/s"``."""
        rules: list[ScheduleRule] = []
        default: float | None = None
        pos, stripped = 0, text.rstrip()
        if not stripped:
            raise _bad(text, "it is empty")
        while pos < len(stripped):
            if m := _OTHERWISE_RE.match(stripped, pos):
                if default is not None:
                    raise _bad(m.group(0).strip(" ,;"), "'otherwise' given twice")
                default = _parse_rate(m.group("rate"), m.group(0))
            elif m := _RULE_RE.match(stripped, pos):
                rules.append(_parse_rule(m))
            else:
                rest = stripped[pos:].strip(" ,;")
                fragment = re.split(r"\s*;\s*|,\s*(?=otherwise\b|\d)", rest, maxsplit=1)[0]
                raise _bad(fragment, "expected '[days] HH:MM-HH:MM rate' or 'otherwise rate'")
            pos = m.end()
        return cls(tuple(rules), 0.0 if default is None else default)

    def rate_at(self, when: datetime.datetime) -> float:
        """Cap in bytes/s at wall-clock time ``when`` (0 = unlimited)."""
        return self._week[_minute_of_week(when)]

    def next_change_after(self, when: datetime.datetime) -> datetime.datetime | None:
        """First instant strictly after ``when`` at which the rate changes.

        None if the rate never changes (every rule has the ``otherwise`` rate).
        """
        if not self._changes:
            return None
        cur = _minute_of_week(when)
        i = bisect.bisect_right(self._changes, cur)
        nxt = self._changes[i] if i < len(self._changes) else self._changes[0] + _MINUTES_PER_WEEK
        base = when.replace(second=0, microsecond=0)
        return base + datetime.timedelta(minutes=nxt - cur)


def _minute_of_week(when: datetime.datetime) -> int:
    return when.weekday() * _MINUTES_PER_DAY + when.hour * 60 + when.minute


def _parse_rate(text: str, fragment: str) -> float:
    try:
        return parse_rate(text, what="schedule rate")
    except InvalidConfig:
        raise _bad(fragment.strip(" ,;"), f"bad rate {text!r}") from None


def _parse_time(text: str, fragment: str, *, is_end: bool) -> int:
    hours, minutes = (int(x) for x in text.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not is_end)):
        raise _bad(fragment, f"bad time {text!r} (00:00 to 23:59; 24:00 only as an end)")
    return hours * 60 + minutes


def _parse_day(name: str, fragment: str) -> int:
    low = name.lower()
    for i, full in enumerate(_DAY_NAMES):
        if len(low) >= 3 and full.startswith(low):
            return i
    raise _bad(fragment, f"unknown day {name!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")


def _parse_rule(m: re.Match[str]) -> ScheduleRule:
    fragment = m.group(0).strip(" ,;")
    start = _parse_time(m.group("start"), fragment, is_end=False)
    end = _parse_time(m.group("end"), fragment, is_end=True)
    if start == end:
        raise _bad(fragment, "empty time range (use 00:00-24:00 for a whole day)")
    days: set[int] = set()
    for item in (m.group("days") or "mon-sun").split(","):
        first, _, last = (s.strip() for s in item.partition("-"))
        a = _parse_day(first, fragment)
        b = _parse_day(last, fragment) if last else a
        days.update((a + k) % 7 for k in range((b - a) % 7 + 1))
    return ScheduleRule(frozenset(days), start, end, _parse_rate(m.group("rate"), fragment))


# --- bandwidth limiter ------------------------------------------------------


@dataclass(frozen=True)
class BandwidthSettings:
    """Bandwidth caps in bytes/s (0 = unlimited).

    ``total`` caps both directions together, ``up``/``down`` each direction,
    ``per_connection`` each connection.  ``schedule`` adds a timetabled cap on
    the total; where both apply the smaller wins.  ``burst`` (bytes) is the
    capacity of every bucket; None = :func:`default_burst` of its rate.
    """

    total: float = 0.0
    up: float = 0.0
    down: float = 0.0
    per_connection: float = 0.0
    schedule: Schedule | None = None
    burst: float | None = None

    def __post_init__(self) -> None:
        for name in ("total", "up", "down", "per_connection"):
            _check_rate(getattr(self, name), f"bandwidth {name}")
        if self.burst is not None:
            _check_burst(self.burst, "bandwidth burst")


def _min_cap(a: float, b: float) -> float:
    """The tighter of two caps where 0 means unlimited."""
    return min(a, b) if a and b else a or b


class BandwidthLimiter:
    """Global, per-direction and per-connection token buckets, plus the timetable.

    Use ``async with limiter:`` (or :meth:`start`/:meth:`stop`) so the schedule
    is followed while transfers run; the follower task never outlives it.
    """

    # Re-read the wall clock at least this often (seconds): a DST change, an NTP
    # step or a suspend moves wall time without moving the monotonic clock.
    _RECHECK: Final = 300.0

    def __init__(self, settings: BandwidthSettings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._total = TokenBucket(settings.total, self._burst_for(settings.total), clock)
        self._up = TokenBucket(settings.up, self._burst_for(settings.up), clock)
        self._down = TokenBucket(settings.down, self._burst_for(settings.down), clock)
        self._task: asyncio.Task[None] | None = None
        if settings.schedule is not None:
            self._apply(settings.schedule.rate_at(clock.now()))

    @property
    def total(self) -> TokenBucket:
        return self._total

    @property
    def up(self) -> TokenBucket:
        return self._up

    @property
    def down(self) -> TokenBucket:
        return self._down

    def new_connection_bucket(self) -> TokenBucket | None:
        """A bucket for one connection if a per-connection cap is set, else None."""
        rate = self._settings.per_connection
        return TokenBucket(rate, self._burst_for(rate), self._clock) if rate else None

    async def acquire(
        self, n: int, direction: Direction, bucket: TokenBucket | None = None
    ) -> None:
        """Wait until ``n`` bytes may go in ``direction`` (through ``bucket``, if given)."""
        if direction not in ("up", "down"):
            raise ValueError(f"direction must be 'up' or 'down', not {direction!r}")
        side = self._up if direction == "up" else self._down
        taken: list[TokenBucket] = []
        try:
            # Narrowest first: tokens taken while waiting on a wider bucket are
            # wasted on the narrow one, which matters less than the reverse.
            for b in (bucket, side, self._total):
                if b is not None:
                    await b.acquire(n)
                    taken.append(b)
        except asyncio.CancelledError:
            for b in taken:
                b.refund(n)
            raise

    async def start(self) -> None:
        """Start following the schedule (no-op without one or when already started)."""
        schedule = self._settings.schedule
        if schedule is not None and self._task is None:
            self._apply(schedule.rate_at(self._clock.now()))
            self._task = asyncio.create_task(self._follow(schedule))

    async def stop(self) -> None:
        """Stop following the schedule and wait for the follower task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))

    async def __aenter__(self) -> BandwidthLimiter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _follow(self, schedule: Schedule) -> None:
        while True:
            now = self._clock.now()
            self._apply(schedule.rate_at(now))
            nxt = schedule.next_change_after(now)
            delay = self._RECHECK if nxt is None else (nxt - now).total_seconds()
            await self._clock.sleep(min(max(delay, 0.0), self._RECHECK))

    def _apply(self, scheduled: float) -> None:
        rate = _min_cap(self._settings.total, scheduled)
        if rate != self._total.rate:
            self._total.set_rate(rate, self._burst_for(rate))

    def _burst_for(self, rate: float) -> float:
        return self._settings.burst or default_burst(rate)


# --- adaptive concurrency ---------------------------------------------------


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


class AdjustableSemaphore:
    """Slot pool with a capacity that may change at runtime, and priorities.

    Lower ``priority`` is served first, FIFO within a priority.  Lowering the
    limit revokes nothing: new grants wait until ``in_use < limit``.  A waiter
    cancelled just after being granted passes the slot on.
    """

    def __init__(self, limit: int) -> None:
        self._limit = self._check(limit)
        self._in_use = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    def set_limit(self, limit: int) -> None:
        self._limit = self._check(limit)
        self._wake()

    async def acquire(self, priority: int = 0) -> None:
        if self._in_use < self._limit and not self._waiters:
            self._in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (priority, next(self._seq), fut)
        heapq.heappush(self._waiters, entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted, then cancelled before running: pass it on
            elif entry in self._waiters:  # frees no capacity: nobody else to wake
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        if self._in_use == 0:
            raise RuntimeError("AdjustableSemaphore released more times than acquired")
        self._in_use -= 1
        self._wake()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int = 0) -> AsyncIterator[None]:
        """``async with sem.slot(priority):`` holds one slot for the block."""
        await self.acquire(priority)
        try:
            yield
        finally:
            self.release()

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._limit:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                self._in_use += 1
                fut.set_result(None)

    @staticmethod
    def _check(limit: int) -> int:
        if limit < 1:
            raise InvalidConfig(f"slot limit must be >= 1, got {limit}", hint="e.g. 16")
        return limit
