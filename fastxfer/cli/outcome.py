"""What ``cp`` (and ``mv``, ``cp -``) did and how it is reported: jobs, outcome, summary.

Shared by :mod:`~fastxfer.cli.cp`, :mod:`~fastxfer.cli.stdio` and :mod:`~fastxfer.cli.rm`
(which sit above it: imports point one way).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from fastxfer.cli.common import EXIT_FAILED, shorten, warn
from fastxfer.errors import FastxferError
from fastxfer.transfer import TransferStats
from fastxfer.units import format_rate, format_size


@dataclass(frozen=True, slots=True)
class CopyJob:
    direction: Literal["upload", "download", "copy"]
    local: str
    """The local file; for a server-side copy, the source URL."""
    bucket: str
    key: str
    size: int
    base: str = ""
    """The destination prefix of an upload or copy: storage-class rules see the key
    without it."""
    src_bucket: str = ""
    src_key: str = ""
    """The source object of a server-side copy."""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def source(self) -> str:
        """Where the data comes from: a local path or an s3:// URL."""
        if self.direction == "upload":
            return self.local
        if self.direction == "copy":
            return f"s3://{self.src_bucket}/{self.src_key}"
        return self.url

    @property
    def target(self) -> str:
        """Where the data goes: an s3:// URL or a local path."""
        return self.local if self.direction == "download" else self.url


@dataclass(frozen=True, slots=True)
class Skipped:
    """A file or key that ``cp`` did not copy: ``name`` (a path or an s3:// URL) and why."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{printable(self.name)}: {self.reason}"


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for one line of a terminal: control characters and undecodable
    bytes escaped, the middle of a very long name elided."""
    return shorten("".join(c if c.isprintable() else repr(c)[1:-1] for c in text), limit)


@dataclass(frozen=True)
class CopyOutcome:
    """What :func:`copy` did: each job's final stats or error, what it could not copy,
    and the wall time."""

    done: tuple[tuple[CopyJob, TransferStats], ...]
    failed: tuple[tuple[CopyJob, FastxferError], ...]
    skipped: tuple[Skipped, ...]
    seconds: float

    @property
    def files(self) -> int:
        return len(self.done) + len(self.failed)

    @property
    def bytes_moved(self) -> int:
        return sum(stats.bytes_done for _, stats in self.done)

    @property
    def rate(self) -> float:
        """Bytes per second over the wall time (the summary's and the bar's final rate)."""
        return self.bytes_moved / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests(self) -> Counter[str]:
        """Requests the completed transfers sent, by S3 operation (not planning LIST/HEAD)."""
        out: Counter[str] = Counter()
        for _, stats in self.done:
            out.update(stats.requests)
        return out

    @property
    def ok(self) -> bool:
        """Everything asked for was copied."""
        return not self.failed and not self.skipped

    @property
    def exit_code(self) -> int:
        """0; the exit code of the first failure (1 when it has none of its own);
        1 when something could not be copied (an incomplete result is not a success)."""
        if self.failed:
            return self.failed[0][1].exit_code or EXIT_FAILED
        return EXIT_FAILED if self.skipped else 0


def print_outcome(
    outcome: CopyOutcome,
    *,
    as_json: bool = False,
    quiet: bool = False,
    json_file: TextIO | None = None,
) -> None:
    """Failures on stderr, then the JSON summary on stdout (``json_file``) or one
    summary line on stderr.

    (What could not be copied was reported as planning found it; the JSON lists it.)
    A copy of one file that failed is one error line, like any other error.
    """
    if outcome.files == 1 and outcome.failed and not outcome.skipped and not as_json:
        warn(f"error: {outcome.failed[0][1]}")
        return
    for job, err in outcome.failed:
        warn(f"{job.direction} failed: {err}")
    if as_json:
        print(json.dumps(outcome_json(outcome), indent=2), file=json_file or sys.stdout)
    elif not quiet:
        not_copied = f"; {len(outcome.skipped)} not copied" if outcome.skipped else ""
        print(
            f"{len(outcome.done)}/{outcome.files} files, {format_size(outcome.bytes_moved)} "
            f"in {outcome.seconds:.2f} s ({format_rate(outcome.rate)}){not_copied}",
            file=sys.stderr,
        )


def outcome_json(outcome: CopyOutcome) -> dict[str, Any]:
    """The ``--json`` summary of a copy."""
    return {
        "ok": outcome.ok,
        "exit": outcome.exit_code,
        "files": outcome.files,
        "files_failed": len(outcome.failed),
        "files_skipped": len(outcome.skipped),
        "bytes": outcome.bytes_moved,
        "seconds": round(outcome.seconds, 4),
        "bytes_per_second": round(outcome.rate),
        "requests": dict(sorted(outcome.requests.items())),
        "transfers": [_transfer_json(j, s) for j, s in outcome.done],
        "errors": [
            {
                "source": j.source,
                "target": j.target,
                "local": j.local,
                "url": j.url,
                "error": str(e),
            }
            for j, e in outcome.failed
        ],
        "skipped": [{"name": s.name, "reason": s.reason} for s in outcome.skipped],
    }


def _transfer_json(job: CopyJob, r: TransferStats) -> dict[str, Any]:
    return {
        "source": job.source,
        "target": job.target,
        "local": job.local,
        "url": job.url,
        "bytes": r.bytes_done,
        "seconds": round(r.elapsed or 0.0, 4),
        "etag": r.etag,
        "crc64nvme": r.checksum,
        "verified": r.verified,
        "multipart": r.multipart,
        "retries": r.retries,
        "requests": dict(sorted(r.requests.items())),
    }
