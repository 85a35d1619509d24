"""What a restore job reports: per-object status, the run's report, its text form."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fastxfer.restore.model import ObjectState
from fastxfer.restore.prices import RequestCounts


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    """One object of a job.  ``*_at`` times: POSIX seconds for ``requested_at``
    and ``expiry``; the job clock's monotonic seconds for ``thawed_seen_at``
    (when a poll first saw it readable) and ``download_*_at``."""

    key: str
    size: int
    storage_class: str
    state: str
    requested_at: float | None
    expiry: float | None
    thawed_seen_at: float | None
    download_started_at: float | None
    download_finished_at: float | None
    downloaded: bool
    local: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """Result of :meth:`RestoreJob.run` or :meth:`RestoreJob.status`."""

    bucket: str
    tier: str
    days: int
    state_path: str
    resumed: bool
    objects: tuple[ObjectStatus, ...]
    requests: RequestCounts
    """Requests this run made (all kinds), counted by the job."""
    restore_extensions: int
    polls: int
    poll_mode: str
    """"list" (ListObjectsV2 RestoreStatus) or "head" (fallback)."""
    elapsed: float
    """Seconds on the job clock."""

    def count(self, state: ObjectState) -> int:
        return sum(1 for o in self.objects if o.state == state.value)

    @property
    def failed(self) -> tuple[ObjectStatus, ...]:
        return tuple(o for o in self.objects if o.error)

    @property
    def downloaded(self) -> int:
        return sum(1 for o in self.objects if o.downloaded)

    def to_dict(self, *, per_object: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bucket": self.bucket,
            "tier": self.tier,
            "days": self.days,
            "state_path": self.state_path,
            "resumed": self.resumed,
            "objects": len(self.objects),
            "by_state": {s.value: self.count(s) for s in ObjectState},
            "downloaded": self.downloaded,
            "failed": len(self.failed),
            "requests": self.requests.to_dict(),
            "restore_extensions": self.restore_extensions,
            "polls": self.polls,
            "poll_mode": self.poll_mode,
            "seconds": round(self.elapsed, 3),
            "errors": [{"key": o.key, "error": o.error} for o in self.failed],
        }
        if per_object:
            d["per_object"] = [asdict(o) for o in self.objects]
        return d


def summarize_report(rep: RestoreReport) -> str:
    """Human text for the end of a run."""
    states = ", ".join(f"{rep.count(s)} {s.value}" for s in ObjectState if rep.count(s))
    r = rep.requests
    text = (
        f"{len(rep.objects)} objects ({states}); {rep.downloaded} downloaded, "
        f"{len(rep.failed)} failed; tier {rep.tier}, restored copies kept {rep.days} days\n"
        f"requests made: RestoreObject {r.restore} ({rep.restore_extensions} extensions), "
        f"GET {r.get}, HEAD {r.head}, LIST {r.list}; {rep.polls} polls ({rep.poll_mode}) "
        f"in {rep.elapsed:.1f} s\nstate: {rep.state_path}"
    )
    for o in rep.failed[:20]:
        text += f"\n  {o.key}: {o.error}"
    return text


__all__ = ["ObjectStatus", "RestoreReport", "summarize_report"]
