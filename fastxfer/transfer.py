"""TransferHandle and TransferStats: what upload() and download() return."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fastxfer.progress import Direction, ProgressEvent, Subscriber

State = Literal["queued", "running", "done", "failed", "cancelled"]

PROGRESS_STEP = 256 * 1024


@dataclass(frozen=True, slots=True)
class TransferStats:
    """A snapshot of one transfer.  Times are ``time.monotonic()`` seconds."""

    transfer_id: int
    direction: Direction
    bucket: str
    key: str
    local: str | None
    size: int | None
    bytes_done: int
    state: State
    parts_total: int
    parts_done: int
    retries: int
    queued_at: float
    started_at: float | None
    finished_at: float | None
    etag: str | None = None
    checksum: str | None = None
    """CRC64NVME of the whole object, base64, when known."""
    verified: str | None = None
    """How the data was verified.  Uploads: 'server' (AWS S3 checked the checksum
    sent), 'sent' (a checksum was sent to another server, which may or may not
    check it), 'client' (the CRC64NVME of the bytes sent is stored with the object
    and checked by every download).  Downloads: 'client' (CRC64NVME of the bytes
    received matched the object's), 'md5' (MD5 matched the ETag), 'size' (only the
    size could be checked).  None: nothing (checksum mode off)."""
    storage_class: str | None = None
    multipart: bool = False
    error: str | None = None
    requests: Mapping[str, int] = field(default_factory=dict)
    """Requests this transfer sent, by S3 operation name."""
    bytes_resumed: int = 0
    """Of ``bytes_done``, bytes an interrupted run had already stored (not sent again)."""

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.monotonic()
        return end - self.started_at

    @property
    def throughput(self) -> float | None:
        """Bytes per second while running."""
        e = self.elapsed
        return self.bytes_done / e if e else None


@dataclass(slots=True)
class _Tracker:
    """The mutable side of TransferStats, owned by the transfer's coroutine."""

    transfer_id: int
    direction: Direction
    bucket: str
    key: str
    local: str | None
    size: int | None
    subscribers: Sequence[Subscriber]
    bytes_done: int = 0
    state: State = "queued"
    parts_total: int = 0
    parts_done: int = 0
    retries: int = 0
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    etag: str | None = None
    checksum: str | None = None
    verified: str | None = None
    storage_class: str | None = None
    multipart: bool = False
    error: str | None = None
    requests: Counter[str] = field(default_factory=Counter)
    bytes_resumed: int = 0
    _unreported: int = 0

    def snapshot(self) -> TransferStats:
        return TransferStats(
            transfer_id=self.transfer_id,
            direction=self.direction,
            bucket=self.bucket,
            key=self.key,
            local=self.local,
            size=self.size,
            bytes_done=self.bytes_done,
            state=self.state,
            parts_total=self.parts_total,
            parts_done=self.parts_done,
            retries=self.retries,
            queued_at=self.queued_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            etag=self.etag,
            checksum=self.checksum,
            verified=self.verified,
            storage_class=self.storage_class,
            multipart=self.multipart,
            error=self.error,
            requests=dict(self.requests),
            bytes_resumed=self.bytes_resumed,
        )

    def queued(self) -> None:
        snap = self.snapshot()
        for s in self.subscribers:
            s.on_queued(snap)

    def start(self) -> None:
        self.state = "running"
        self.started_at = time.monotonic()

    def progress(self, delta: int, *, flush: bool = False) -> None:
        """Count bytes; tell subscribers in steps of at least PROGRESS_STEP."""
        self.bytes_done += delta
        self._unreported += delta
        if self.subscribers and (flush or abs(self._unreported) >= PROGRESS_STEP):
            self._emit()

    def _emit(self) -> None:
        if not self._unreported:
            return
        ev = ProgressEvent(
            self.transfer_id,
            self.direction,
            self.bucket,
            self.key,
            self._unreported,
            self.bytes_done,
            self.size,
        )
        self._unreported = 0
        for s in self.subscribers:
            s.on_progress(ev)

    def finish(self, state: State, error: str | None = None) -> TransferStats:
        """Mark the end; returns the final snapshot (the one subscribers were given)."""
        if self.subscribers:
            self._emit()
        self.state = state
        self.error = error
        self.finished_at = time.monotonic()
        snap = self.snapshot()
        for s in self.subscribers:
            s.on_done(snap)
        return snap


class TransferHandle:
    """A running upload or download.

    ``await handle`` returns the final :class:`TransferStats` or raises the
    transfer's :class:`~fastxfer.errors.FastxferError`; ``cancel()`` stops it
    (a multipart upload is aborted, a partial download is deleted);
    ``stats()`` is a snapshot at any time.
    """

    def __init__(self, task: asyncio.Task[TransferStats], tracker: _Tracker) -> None:
        self._task = task
        self._tracker = tracker

    def __await__(self) -> Generator[Any, None, TransferStats]:
        return self._task.__await__()

    def cancel(self) -> bool:
        return self._task.cancel()

    def done(self) -> bool:
        return self._task.done()

    def stats(self) -> TransferStats:
        return self._tracker.snapshot()

    def __repr__(self) -> str:
        t = self._tracker
        return f"<TransferHandle #{t.transfer_id} {t.direction} s3://{t.bucket}/{t.key} {t.state}>"
