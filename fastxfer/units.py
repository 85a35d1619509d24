"""Human units for sizes and rates: ``16MiB``, ``1.5G``, ``4MiB/s``, ``800K``.

Decimal suffixes (K, M, G, T, also KB, MB...) are powers of 1000; binary
suffixes (Ki, Mi, KiB, MiB...) are powers of 1024.  A bare number is bytes.
"""

from __future__ import annotations

import math
import re

from fastxfer.errors import InvalidConfig

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str | int, *, what: str = "size") -> int:
    """Parse ``"16MiB"`` -> 16777216.  Raises InvalidConfig with a clear message."""
    if isinstance(text, int):
        if text < 0:
            raise InvalidConfig(f"{what} must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise InvalidConfig(
            f"invalid {what} {text!r}",
            hint="use a number with an optional unit, e.g. 8MiB, 500M, 1.5GiB",
        )
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_rate(text: str | int | float, *, what: str = "rate") -> float:
    """Parse a rate in bytes per second: ``"4MiB/s"``, ``"800K"`` (the ``/s`` is optional).

    ``"0"``, ``"off"`` and ``"unlimited"`` mean no limit and return 0.0.
    """
    if isinstance(text, int | float):
        if text < 0:
            raise InvalidConfig(f"{what} must not be negative, got {text}")
        return float(text)
    t = text.strip().lower()
    if t in ("off", "unlimited", "none", ""):
        return 0.0
    t = t.removesuffix("/s").removesuffix("ps")
    return float(parse_size(t, what=what))


def parse_count(text: str | int | float, *, what: str = "number") -> float:
    """Parse a non-negative number such as a request rate: ``"100"``, ``"2.5"``.

    ``"0"``, ``"off"`` and ``"unlimited"`` mean no limit and return 0.0.
    """
    if isinstance(text, str):
        t = text.strip().lower()
        if t in ("off", "unlimited", "none", ""):
            return 0.0
        try:
            value = float(t)
        except ValueError:
            raise InvalidConfig(
                f"invalid {what} {text!r}", hint="use a number, e.g. 100 or 2.5"
            ) from None
    else:
        value = float(text)
    if not math.isfinite(value) or value < 0:
        raise InvalidConfig(f"invalid {what} {text!r}", hint="use a non-negative number")
    return value


def format_size(n: float) -> str:
    """1572864 -> '1.5 MiB'."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_second: float) -> str:
    """Throughput in decimal megabytes per second, as benchmarks report it."""
    return f"{bytes_per_second / 1e6:.1f} MB/s"
