"""RestoreOptions: what a restore job restores, and how."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastxfer.errors import InvalidConfig
from fastxfer.restore.model import DAY, RestoreTier
from fastxfer.state import default_path


def default_state_path() -> str:
    """The state file a job uses without ``state_path`` (:func:`fastxfer.state.default_path`)."""
    return default_path()


@dataclass(frozen=True, kw_only=True)
class RestoreOptions:
    """What to restore and how.  Times in seconds, sizes in bytes.

    Give ``keys`` (restored, polled and downloaded in this order) or ``prefix``
    (every object under it, in key order).
    """

    bucket: str
    keys: tuple[str, ...] = ()
    prefix: str | None = None
    tier: RestoreTier = RestoreTier.STANDARD
    days: int = 7
    """How long the restored copy lasts (AWS rounds up to midnight UTC)."""
    tps: float = 50.0
    """RestoreObject requests per second (0: no cap).

    50/s asks for 180,000 objects an hour, small next to restore times of
    hours; measured on a 2-core machine against the moto test server, 100/s
    thawed objects faster than they could be downloaded (the machine was
    saturated while requests and downloads overlapped) and downloads started
    up to 2 s after their thaw was seen, against 1 s at 50/s.  Raise it for
    millions of objects on a big machine.
    """
    poll_interval: float | None = None
    """Seconds between polls (None: :func:`default_poll_interval`)."""
    download_dir: str | None = None
    """With :meth:`RestoreJob.run`: download every object here as it thaws
    (key relative to ``prefix``)."""
    state_path: str | None = None
    """sqlite state file (None: :func:`fastxfer.state.default_path`); it may hold many jobs."""
    extend_margin: float = DAY
    """Re-issue RestoreObject when a copy not yet downloaded expires within this."""
    max_poll_failures: int = 5
    """Consecutive failed polls before the job gives up."""

    def __post_init__(self) -> None:
        if not self.bucket:
            raise InvalidConfig("a restore job needs a bucket")
        if bool(self.keys) == (self.prefix is not None):
            raise InvalidConfig(
                "a restore job takes either keys or a prefix",
                hint="give s3://bucket/prefix/ or one or more s3://bucket/key",
            )
        if len(set(self.keys)) != len(self.keys):
            raise InvalidConfig("the same key is listed twice")
        if not 1 <= self.days <= 36500:
            raise InvalidConfig(f"--days must be between 1 and 36500, got {self.days}")
        if self.tps < 0:
            raise InvalidConfig(f"--tps must not be negative, got {self.tps}")
        if self.poll_interval is not None and self.poll_interval <= 0:
            raise InvalidConfig(f"poll interval must be positive, got {self.poll_interval}")

    def spec(self) -> dict[str, Any]:
        """What identifies the job (its key in the state file)."""
        return {"bucket": self.bucket, "prefix": self.prefix, "keys": list(self.keys)}


__all__ = ["RestoreOptions", "default_state_path"]
