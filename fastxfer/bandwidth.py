"""Bandwidth caps: total, per direction, per connection and on a weekly timetable.

Example::

    limiter = BandwidthLimiter(BandwidthSettings(up=parse_rate("4MiB/s")), SystemClock())
    async with limiter:  # follows the schedule, if any, while the block runs
        for chunk in chunks(part, CHUNK_SIZE):
            await limiter.acquire(len(chunk), "up")
"""

from __future__ import annotations

import asyncio
import bisect
import datetime
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from fastxfer.clock import Clock
from fastxfer.errors import InvalidConfig
from fastxfer.tokenbucket import TokenBucket, check_burst, check_rate, default_burst
from fastxfer.units import parse_rate

Direction = Literal["up", "down"]

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
    'e.g. "Mon-Fri 08:00-18:00 4MiB/s, otherwise unlimited", "22:00-06:00 off", '
    'or rclone\'s "08:00,512K 12:00,10M 23:00,off"'
)
# rclone's timetable: "[Day-]HH:MM,RATE" entries separated by spaces.
_TIMETABLE_RE: Final = re.compile(r"\d{1,2}:\d{2},")
_ENTRY_RE: Final = re.compile(
    r"^(?:(?P<day>[a-z]+)-)?(?P<hh>\d{1,2}):(?P<mm>\d{2}),(?P<rate>.+)$", re.I
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
        """Parse e.g. ``"Sat,Sun 00:00-24:00 1MiB/s; otherwise 10MiB/s"``, or rclone's
        timetable ``"08:00,512K 12:00,10M 23:00,off"`` (see :func:`parse_timetable`)."""
        if _TIMETABLE_RE.search(text):
            return parse_timetable(text)
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


def parse_timetable(text: str) -> Schedule:
    """rclone's ``--bwlimit`` timetable: ``"08:00,512K 12:00,10M 23:00,off"``.

    Entries ``[Day-]HH:MM,RATE`` separated by spaces.  Each sets the rate from
    its time until the next entry; the last one of the week runs on until the
    first (so before 08:00 above it is ``off``, from 23:00 the day before).  An
    entry without a day applies every day (``Mon-08:00,1M`` only on Mondays);
    at the same minute a day's own entry beats an every-day one.  Rates as
    fastxfer reads them everywhere: ``512K`` is 512 KiB/s, a bare number is
    bytes/s (rclone would read ``512`` as KiB/s: write the unit).  rclone's
    ``UP:DOWN`` rate pairs are refused: use --bwlimit-up / --bwlimit-down.
    """
    entries: dict[int, tuple[bool, float]] = {}  # minute of week -> (has a day, rate)
    tokens = text.replace(";", " ").split()
    if not tokens:
        raise _bad(text, "it is empty")
    for token in tokens:
        m = _ENTRY_RE.match(token)
        if m is None:
            raise _bad(token, "expected '[Day-]HH:MM,RATE' entries separated by spaces")
        hh, mm = int(m.group("hh")), int(m.group("mm"))
        if hh > 23 or mm > 59:
            raise _bad(token, f"bad time {m.group('hh')}:{m.group('mm')} (00:00 to 23:59)")
        rate_text = m.group("rate")
        if ":" in rate_text:
            raise _bad(
                token,
                "UP:DOWN rate pairs are not supported; use --bwlimit-up and --bwlimit-down",
            )
        rate = _parse_rate(rate_text, token)
        dated = m.group("day") is not None
        days = [_parse_day(m.group("day"), token)] if dated else range(7)
        for day in days:
            minute = day * _MINUTES_PER_DAY + hh * 60 + mm
            previous = entries.get(minute)
            if previous is not None and previous[0] == dated:
                raise _bad(token, "two entries for the same time")
            if previous is None or dated:
                entries[minute] = (dated, rate)
    starts = sorted(entries)
    rules: list[ScheduleRule] = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else starts[0] + _MINUTES_PER_WEEK
        rate = entries[start][1]
        cur = start
        while cur < end:  # one rule per day the span touches
            day = cur // _MINUTES_PER_DAY
            day_end = min(end, (day + 1) * _MINUTES_PER_DAY)
            rules.append(
                ScheduleRule(
                    frozenset({day % 7}),
                    cur - day * _MINUTES_PER_DAY,
                    day_end - day * _MINUTES_PER_DAY,
                    rate,
                )
            )
            cur = day_end
    return Schedule(tuple(rules), 0.0)


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
            check_rate(getattr(self, name), f"bandwidth {name}")
        if self.burst is not None:
            check_burst(self.burst, "bandwidth burst")


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
