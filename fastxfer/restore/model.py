"""What a restore job knows about objects: tiers, states, expected times, durations.

Pure functions and small types; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from fastxfer.errors import InvalidConfig
from fastxfer.limits import MAX_LIST_PAGE
from fastxfer.storage_class import ARCHIVE_CLASSES, parse_restore_header

LIST_PAGE_SIZE: Final = MAX_LIST_PAGE
"""Objects reported per ListObjectsV2 request (the S3 maximum)."""
GB: Final = 1024**3
"""AWS bills per GB of 2**30 bytes."""
DAY: Final = 86400.0


class RestoreTier(StrEnum):
    """Retrieval tier of a RestoreObject request (``GlacierJobParameters.Tier``)."""

    EXPEDITED = "Expedited"
    STANDARD = "Standard"
    BULK = "Bulk"

    @classmethod
    def parse(cls, text: str) -> RestoreTier:
        """Case-insensitive: ``"bulk"`` -> ``RestoreTier.BULK``."""
        for tier in cls:
            if tier.value.lower() == text.strip().lower():
                return tier
        raise InvalidConfig(
            f"invalid restore tier {text!r}", hint="choose Expedited, Standard or Bulk"
        )


class ObjectState(StrEnum):
    """Where an object is on the way from the archive to the local disk."""

    READABLE = "readable"
    """Online class (STANDARD, GLACIER_IR, ...): GET works, nothing to restore."""
    COLD = "cold"
    """Archived, no restore requested (or the restored copy expired)."""
    RESTORING = "restoring"
    """RestoreObject accepted; not readable yet."""
    RESTORED = "restored"
    """A temporary restored copy is readable until ``expiry``."""


# Typical completion time (seconds) per (class, tier), from the S3 user guide
# "Archive retrieval options": Expedited 1-5 min, Standard 3-5 h, Bulk 5-12 h
# for GLACIER; Standard within 12 h and Bulk within 48 h for DEEP_ARCHIVE.
EXPECTED_RESTORE_SECONDS: Final[Mapping[tuple[str, RestoreTier], float]] = {
    ("GLACIER", RestoreTier.EXPEDITED): 5 * 60.0,
    ("GLACIER", RestoreTier.STANDARD): 5 * 3600.0,
    ("GLACIER", RestoreTier.BULK): 12 * 3600.0,
    ("DEEP_ARCHIVE", RestoreTier.STANDARD): 12 * 3600.0,
    ("DEEP_ARCHIVE", RestoreTier.BULK): 48 * 3600.0,
}


def expected_restore_seconds(storage_class: str, tier: RestoreTier) -> float | None:
    """Typical time from RestoreObject to a readable copy (None: no such restore)."""
    return EXPECTED_RESTORE_SECONDS.get((storage_class, tier))


def check_tier(storage_class: str, tier: RestoreTier) -> None:
    """Raise InvalidConfig if ``tier`` does not exist for ``storage_class``.

    DEEP_ARCHIVE has no Expedited tier (AWS answers 400 InvalidArgument).
    """
    if storage_class == "DEEP_ARCHIVE" and tier is RestoreTier.EXPEDITED:
        raise InvalidConfig(
            "the Expedited tier does not exist for DEEP_ARCHIVE objects",
            hint="use --tier Standard (within 12 hours) or --tier Bulk (within 48 hours)",
        )


def default_poll_interval(storage_class: str, tier: RestoreTier) -> float:
    """Seconds between polls for a restore of this class and tier.

    Minutes for Expedited (1 min; it completes in 1-5 min), hours for the
    others (1 h; 4 h for DEEP_ARCHIVE Bulk, which takes up to 48 h): polling
    more often costs requests and finds nothing new.
    """
    if tier is RestoreTier.EXPEDITED:
        return 60.0
    if storage_class == "DEEP_ARCHIVE" and tier is RestoreTier.BULK:
        return 4 * 3600.0
    return 3600.0


def classify(storage_class: str | None, restore_header: str | None = None) -> ObjectState:
    """State of an object from its storage class and ``x-amz-restore`` header.

    LIST results carry the same header form (``fastxfer.session.ObjectInfo``),
    so one function serves HEAD and LIST.
    """
    if (storage_class or "STANDARD") not in ARCHIVE_CLASSES:
        return ObjectState.READABLE
    ongoing, _ = parse_restore_header(restore_header)
    if ongoing is None:
        return ObjectState.COLD
    return ObjectState.RESTORING if ongoing else ObjectState.RESTORED


def parse_duration(text: str | float) -> float:
    """``"1s"``, ``"90"``, ``"5m"``, ``"2h"``, ``"1d"`` -> seconds (positive)."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|min|h|d)?\s*", text.lower())
        if not m:
            raise InvalidConfig(
                f"invalid duration {text!r}", hint="use a number with s, m, h or d, e.g. 30s, 1h"
            )
        unit = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": DAY}[m.group(2) or "s"]
        value = float(m.group(1)) * unit
    if value <= 0:
        raise InvalidConfig(f"duration must be positive, got {text!r}")
    return value


@dataclass(slots=True)
class ObjectRecord:
    """One object of a job as the job tracks it (persisted by the store).

    ``requested_at`` and ``expiry`` are POSIX seconds; ``thawed_seen_at`` and
    ``download_*_at`` are the job clock's monotonic seconds (not persisted).
    """

    seq: int
    """Position in the job: restores, polls and downloads go in this order."""
    key: str
    size: int
    storage_class: str
    etag: str
    state: ObjectState
    requested_at: float | None = None
    expiry: float | None = None
    downloaded: bool = False
    thawed_seen_at: float | None = None
    download_started_at: float | None = None
    download_finished_at: float | None = None
    local: str | None = None
    error: str | None = None


__all__ = [
    "DAY",
    "EXPECTED_RESTORE_SECONDS",
    "GB",
    "LIST_PAGE_SIZE",
    "ObjectRecord",
    "ObjectState",
    "RestoreTier",
    "check_tier",
    "classify",
    "default_poll_interval",
    "expected_restore_seconds",
    "parse_duration",
]
