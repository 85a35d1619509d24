"""The backend's settings, from ``FASTXFER_*`` environment variables.

duplicity rejects options it does not know, so everything fastxfer-specific
comes from the environment: the engine's variables are read by
:meth:`TransferConfig.from_env` (connection budget, part size, bandwidth and
request caps...), the backend's own ones here:

| variable | meaning (default) |
|---|---|
| `FASTXFER_SPOOL_VOLUMES` | volumes queued or uploading, at most (8); then duplicity waits |
| `FASTXFER_SPOOL_SIZE` | bytes of such volumes, at most (1GiB; one volume always fits) |
| `FASTXFER_RESTORE_TIER` | Standard, Bulk or Expedited: how volumes are thawed (Standard) |
| `FASTXFER_RESTORE_DAYS` | days a thawed copy stays readable (7) |
| `FASTXFER_POLL_INTERVAL` | time between thaw checks, e.g. `30s`, `15m` (from the tier) |
| `FASTXFER_RESTORE_STATE` | restore state file (fastxfer's state file in the user cache) |
| `FASTXFER_ARCHIVE_KEEP_FULL` | after a full backup, archive chains older than the newest N (off) |
| `FASTXFER_ARCHIVE_CLASS` | the class they move to (DEEP_ARCHIVE) |

A bad value raises :class:`~fastxfer.errors.InvalidConfig` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastxfer.config import TransferConfig, validate_storage_class
from fastxfer.errors import InvalidConfig
from fastxfer.limits import GiB
from fastxfer.restore import RestoreTier, parse_duration
from fastxfer.units import parse_size

SCHEME = "fastxfer+s3"
"""The URL scheme of the backend: ``fastxfer+s3://bucket/prefix``."""

DEFAULT_SPOOL_VOLUMES = 8
DEFAULT_SPOOL_BYTES = 1 * GiB
DEFAULT_RESTORE_DAYS = 7

BACKEND_VARIABLES = (
    "FASTXFER_SPOOL_VOLUMES",
    "FASTXFER_SPOOL_SIZE",
    "FASTXFER_RESTORE_TIER",
    "FASTXFER_RESTORE_DAYS",
    "FASTXFER_POLL_INTERVAL",
    "FASTXFER_RESTORE_STATE",
    "FASTXFER_ARCHIVE_KEEP_FULL",
    "FASTXFER_ARCHIVE_CLASS",
)


@dataclass(frozen=True, kw_only=True)
class BackendSettings:
    """Everything the duplicity backend takes from the environment."""

    transfer: TransferConfig
    spool_volumes: int = DEFAULT_SPOOL_VOLUMES
    """Volumes queued or uploading at once; ``_put`` waits beyond."""
    spool_bytes: int = DEFAULT_SPOOL_BYTES
    """Bytes of volumes queued or uploading at once (a single volume always fits)."""
    restore_tier: RestoreTier = RestoreTier.STANDARD
    restore_days: int = DEFAULT_RESTORE_DAYS
    poll_interval: float | None = None
    """Seconds between thaw checks (None: from the tier and storage class)."""
    restore_state: str | None = None
    """Restore state file (None: fastxfer's default state file)."""
    archive_keep_full: int | None = None
    """After a successful full backup, archive chains older than the newest N (None: off)."""
    archive_class: str = "DEEP_ARCHIVE"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **transfer_overrides: Any
    ) -> BackendSettings:
        """Read the environment (``os.environ`` by default).

        ``transfer_overrides`` are TransferConfig fields that win over the
        environment (duplicity's ``--s3-endpoint-url`` and ``--s3-region-name``).
        """
        env: Mapping[str, str] = os.environ if environ is None else environ
        transfer = TransferConfig.from_env(env, **transfer_overrides)

        def get(name: str) -> str | None:
            raw = env.get(name, "").strip()
            return raw or None

        def checked(name: str, parse: Any, raw: str) -> Any:
            try:
                return parse(raw)
            except InvalidConfig as exc:
                raise InvalidConfig(
                    f"{name}: invalid value {raw!r}: {exc.message}", hint=exc.hint
                ) from None

        values: dict[str, Any] = {}
        if (raw := get("FASTXFER_SPOOL_VOLUMES")) is not None:
            values["spool_volumes"] = checked(
                "FASTXFER_SPOOL_VOLUMES", lambda r: _positive_int(r, 1, 10_000), raw
            )
        if (raw := get("FASTXFER_SPOOL_SIZE")) is not None:
            size = checked("FASTXFER_SPOOL_SIZE", parse_size, raw)
            if size <= 0:
                raise InvalidConfig(f"FASTXFER_SPOOL_SIZE: invalid value {raw!r}: must be positive")
            values["spool_bytes"] = size
        if (raw := get("FASTXFER_RESTORE_TIER")) is not None:
            values["restore_tier"] = checked("FASTXFER_RESTORE_TIER", RestoreTier.parse, raw)
        if (raw := get("FASTXFER_RESTORE_DAYS")) is not None:
            values["restore_days"] = checked(
                "FASTXFER_RESTORE_DAYS", lambda r: _positive_int(r, 1, 36_500), raw
            )
        if (raw := get("FASTXFER_POLL_INTERVAL")) is not None:
            values["poll_interval"] = checked("FASTXFER_POLL_INTERVAL", parse_duration, raw)
        if (raw := get("FASTXFER_RESTORE_STATE")) is not None:
            values["restore_state"] = os.path.abspath(os.path.expanduser(raw))
        if (raw := get("FASTXFER_ARCHIVE_KEEP_FULL")) is not None:
            values["archive_keep_full"] = checked(
                "FASTXFER_ARCHIVE_KEEP_FULL", lambda r: _positive_int(r, 1, 10_000), raw
            )
        if (raw := get("FASTXFER_ARCHIVE_CLASS")) is not None:
            values["archive_class"] = checked("FASTXFER_ARCHIVE_CLASS", validate_storage_class, raw)
        return cls(transfer=transfer, **values)


def _positive_int(raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidConfig("not a whole number", hint=f"use {low}-{high}") from None
    if not low <= value <= high:
        raise InvalidConfig(f"must be between {low} and {high}")
    return value
