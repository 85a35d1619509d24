"""Units as users know them, rclone's --bwlimit timetable, and what --help says about both.

Pure logic, no server: tables of inputs and what they must mean.
"""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from fastxfer.bandwidth import Schedule
from fastxfer.cli import build_parser
from fastxfer.cli.common import config_from_args
from fastxfer.errors import InvalidConfig, UsageError
from fastxfer.units import parse_rate, parse_size

KiB, MiB, GiB = 1024, 1024**2, 1024**3
MON = dt.datetime(2024, 1, 1)  # a Monday


def at(day: int, hh: int, mm: int = 0) -> dt.datetime:
    return MON + dt.timedelta(days=day, hours=hh, minutes=mm)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("8M", 8 * MiB),
        ("8MiB", 8 * MiB),
        ("8MB", 8_000_000),
        ("1.5G", int(1.5 * GiB)),
        ("800", 800),
        ("16k", 16 * KiB),
        ("2T", 2 * 1024**4),
        ("500KB", 500_000),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("8M", 8 * MiB),
        ("8M/s", 8 * MiB),
        ("8MB/s", 8_000_000),
        ("800", 800),
        ("64Mbit/s", 8_000_000),
        ("64Mbps", 8_000_000),
        ("off", 0),
    ],
)
def test_rates(text: str, rate: float) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["8Mb", "8Mbit", "lots", "-1M"])
def test_sizes_refused(text: str) -> None:
    with pytest.raises(InvalidConfig):
        parse_size(text)


OFF, K512, M10 = 0.0, 512 * KiB, 10 * MiB


@pytest.mark.parametrize(
    ("when", "rate"),
    [
        (at(0, 0), OFF),  # before the first entry: the last one of the day before
        (at(0, 7, 59), OFF),
        (at(0, 8), K512),
        (at(0, 11, 59), K512),
        (at(0, 12), M10),
        (at(3, 22, 59), M10),
        (at(3, 23), OFF),
        (at(6, 9), K512),  # every day
    ],
)
def test_rclone_daily_timetable(when: dt.datetime, rate: float) -> None:
    assert Schedule.parse("08:00,512K 12:00,10M 23:00,off").rate_at(when) == rate


@pytest.mark.parametrize(
    ("when", "rate"),
    [
        (at(0, 0), 512.0),  # Mon-00:00,512: a bare number is bytes/s in fastxfer
        (at(2, 12), 512.0),
        (at(4, 23, 58), 512.0),
        (at(4, 23, 59), M10),  # Fri-23:59,10M
        (at(6, 19, 59), M10),
        (at(6, 20), OFF),  # Sun-20:00,off ... until Monday 00:00
        (at(7, 0), 512.0),
    ],
)
def test_rclone_weekly_timetable(when: dt.datetime, rate: float) -> None:
    assert Schedule.parse("Mon-00:00,512 Fri-23:59,10M Sun-20:00,off").rate_at(when) == rate


def test_a_days_own_entry_beats_the_every_day_one_at_the_same_time() -> None:
    s = Schedule.parse("08:00,1M Sat-08:00,off 18:00,off")
    assert s.rate_at(at(0, 9)) == MiB
    assert s.rate_at(at(5, 9)) == OFF
    assert s.rate_at(at(6, 9)) == MiB


def test_the_timetable_says_when_it_next_changes() -> None:
    s = Schedule.parse("08:00,512K 12:00,10M")
    assert s.next_change_after(at(0, 9)) == at(0, 12)
    assert s.next_change_after(at(0, 13)) == at(1, 8)
    assert Schedule.parse("00:00,1M").next_change_after(at(0, 1)) is None


def test_the_weekly_form_still_parses() -> None:
    s = Schedule.parse("Mon-Fri 08:00-18:00 4MiB/s, otherwise off")
    assert s.rate_at(at(0, 9)) == 4 * MiB
    assert s.rate_at(at(5, 9)) == OFF


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("08:00,512K 25:00,off", "bad time"),
        ("08:00,512K 08:00,1M", "same time"),
        ("08:00,512K:1M", "UP:DOWN"),
        ("08:00,fast", "bad rate"),
        ("Xyz-08:00,1M", "unknown day"),
        ("08:00,1M junk", "[Day-]HH:MM,RATE"),
    ],
)
def test_bad_timetables_say_why(text: str, message: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        Schedule.parse(text)
    assert message in str(info.value)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_bwlimit_takes_a_rate_or_a_timetable() -> None:
    cfg = config_from_args(parse("cp", "a", "s3://bkt/k", "--bwlimit", "8M"), {})
    assert cfg.bwlimit == 8 * MiB
    assert cfg.bwlimit_schedule is None
    table = "08:00,512K 12:00,10M 23:00,off"
    cfg = config_from_args(parse("sync", "a", "s3://bkt/k", "--bwlimit", table), {})
    assert cfg.bwlimit == 0
    assert cfg.bwlimit_schedule == table
    with pytest.raises(UsageError, match="not both"):
        config_from_args(
            parse("cp", "a", "s3://bkt/k", "--bwlimit", table, "--bwlimit-schedule", table), {}
        )
    with pytest.raises(InvalidConfig, match="--bwlimit"):
        config_from_args(parse("cp", "a", "s3://bkt/k", "--bwlimit", "08:00,nope"), {})


def _help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices[command].format_help().split())


@pytest.mark.parametrize("command", ["cp", "sync", "mv"])
def test_help_says_the_units(command: str) -> None:
    text = _help(command)
    assert "bare K/M/G/T and KiB/MiB/GiB are binary (8M = 8 MiB), KB/MB/GB decimal" in text
    assert "a bare number is B/s" in text
    assert "08:00,512K 12:00,10M 23:00,off" in text
