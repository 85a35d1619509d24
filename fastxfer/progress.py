"""Progress events and subscribers.

A subscriber gets ``on_queued`` once, ``on_progress`` as bytes move (batched
into steps of at least ~256 KiB; negative when a range is re-sent), and
``on_done`` once, with the final stats.  Subscribers run in the event loop:
they must be quick and must not block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from fastxfer.transfer import TransferStats

Direction = Literal["upload", "download", "copy"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One step of one transfer."""

    transfer_id: int
    direction: Direction
    bucket: str
    key: str
    bytes_delta: int
    """Bytes moved since the last event (negative when data is re-sent)."""
    bytes_done: int
    size: int | None
    """Total size in bytes, None while unknown (streamed uploads)."""


@runtime_checkable
class Subscriber(Protocol):
    def on_queued(self, stats: TransferStats) -> None: ...

    def on_progress(self, event: ProgressEvent) -> None: ...

    def on_done(self, stats: TransferStats) -> None: ...


class BaseSubscriber:
    """Convenience base with no-op methods; override what you need."""

    def on_queued(self, stats: TransferStats) -> None:
        return None

    def on_progress(self, event: ProgressEvent) -> None:
        return None

    def on_done(self, stats: TransferStats) -> None:
        return None
