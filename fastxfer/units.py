"""Human units for sizes and rates, as rclone and aws mean them.

* ``42``, ``42B``: bytes.
* ``8K``, ``8M``, ``8G``, ``8T`` (any case): binary, as rclone and aws mean them:
  ``8M`` = 8 MiB = 8,388,608 bytes.  ``8KiB``, ``8MiB`` ... say it explicitly.
* ``8KB``, ``8MB``, ``8GB``, ``8TB``: decimal, ``8MB`` = 8,000,000 bytes.
* Rates: the same, bytes per second, with an optional ``/s`` (``8M`` = ``8MiB/s``).
* Rates in bits: ``8Mbit``, ``8Mbps``, ``100kbit/s``, decimal as networks count
  (``8Mbps`` = 1,000,000 bytes/s).  ``8Mb`` is ambiguous and refused.

A bit unit is never read as bytes, and bits are refused where a size is asked for.
"""

from __future__ import annotations

import math
import re

from fastxfer.errors import InvalidConfig

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}

# Bits per second: decimal prefixes as networks use them (1 Mbit = 10**6 bits),
# binary ones when said explicitly.
_BIT_UNITS: dict[str, int] = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_BITS_RE = re.compile(r"^([a-z]*?)(?:bits?|bps)$")
_AMBIGUOUS_RE = re.compile(r"^[KMGT]i?b$")
_SIZE_HINT = "use a number with an optional unit: 8MiB or 8M (binary), 500MB (decimal), 1.5G"


def parse_size(text: str | int, *, what: str = "size") -> int:
    """``"16MiB"`` and ``"16M"`` -> 16777216; ``"16MB"`` -> 16000000.

    Raises InvalidConfig with a clear message (bits are refused: a size is bytes).
    """
    if isinstance(text, int):
        if text < 0:
            raise InvalidConfig(f"{what} must not be negative, got {text}")
        return text
    m = _SIZE_RE.match(text)
    unit = m.group(2).lower() if m else ""
    if m and unit.endswith(("bit", "bits", "bps")):
        raise InvalidConfig(
            f"invalid {what} {text!r}: a size is in bytes, not bits", hint=_SIZE_HINT
        )
    if m and _AMBIGUOUS_RE.match(m.group(2)):
        # "8Mb" reads as megabits to many and as megabytes to some: ask.
        raise InvalidConfig(
            f"invalid {what} {text!r}: {m.group(2)!r} is ambiguous",
            hint="write MB or MiB for bytes, Mbit for bits",
        )
    if not m or unit not in _UNITS:
        raise InvalidConfig(f"invalid {what} {text!r}", hint=_SIZE_HINT)
    return int(float(m.group(1)) * _UNITS[unit])


def parse_rate(text: str | int | float, *, what: str = "rate") -> float:
    """Bytes per second: ``"4MiB/s"``, ``"4M"`` (the ``/s`` is optional), or bits:
    ``"8Mbps"``, ``"8Mbit/s"`` -> 1,000,000.0.

    ``"0"``, ``"off"`` and ``"unlimited"`` mean no limit and return 0.0.
    """
    if isinstance(text, int | float):
        if text < 0:
            raise InvalidConfig(f"{what} must not be negative, got {text}")
        return float(text)
    t = text.strip()
    if t.lower() in ("off", "unlimited", "none", ""):
        return 0.0
    t = t.removesuffix("/s").removesuffix("/S")
    m = _SIZE_RE.match(t)
    if m and m.group(2).lower().endswith(("bps", "bit", "bits")):
        bits = _BITS_RE.match(m.group(2).lower())
        prefix = bits.group(1) if bits else None
        if prefix is None or prefix not in _BIT_UNITS:
            raise InvalidConfig(
                f"invalid {what} {text!r}", hint="e.g. 8MiB/s, 8M (binary bytes), 64Mbit/s"
            )
        return float(m.group(1)) * _BIT_UNITS[prefix] / 8
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
