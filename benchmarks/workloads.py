"""Workloads: what is transferred, by name.

A workload is a direction and a data set of ``count`` files of ``size`` bytes.
``--scale`` shrinks or grows it: the size of a single-file workload, the
number of files of a many-file one (so a 4 MiB file stays a 4 MiB file and
keeps taking the same code path, single PUT or multipart).  The 1-byte
workloads (``kind`` ``startup``) are never scaled: they measure what a
process costs before and after its one tiny request.

Kinds: ``single`` (one large object: the throughput workloads, where
``--common-concurrency`` adds each peer at one common connection count),
``many`` (many files: per-request cost) and ``startup`` (1 byte: the cost of
starting a client process, subtracted from a 1 GiB transfer's whole-process
CPU to give the marginal CPU per GiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

Direction = Literal["upload", "download"]
Kind = Literal["single", "many", "startup"]


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    direction: Direction
    count: int
    size: int
    summary: str
    kind: Kind = "single"

    def scaled(self, scale: float) -> ScaledWorkload:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if self.kind == "startup":
            return ScaledWorkload(self, scale, self.count, self.size)
        if self.count == 1:
            size = max(1, round(self.size * scale))
            # Keep whole MiB so part arithmetic stays readable.
            if size >= MiB:
                size = max(MiB, size // MiB * MiB)
            return ScaledWorkload(self, scale, 1, size)
        return ScaledWorkload(self, scale, max(1, round(self.count * scale)), self.size)


@dataclass(frozen=True, slots=True)
class ScaledWorkload:
    workload: Workload
    scale: float
    count: int
    size: int

    @property
    def name(self) -> str:
        return self.workload.name

    @property
    def direction(self) -> Direction:
        return self.workload.direction

    @property
    def kind(self) -> Kind:
        return self.workload.kind

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    @property
    def dataset(self) -> str:
        """Name of the source data set; workloads of the same shape share one."""
        return f"{self.count}x{self.size}"

    def describe(self) -> str:
        return f"{self.count} x {human_size(self.size)} {self.direction}"


def human_size(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % (div // 16 or 1) == 0:
            v = n / div
            return f"{v:g} {unit}"
    return f"{n} B"


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("upload-1g", "upload", 1, 1 * GiB, "one 1 GiB file: multipart throughput"),
        Workload("download-1g", "download", 1, 1 * GiB, "one 1 GiB object: ranged GET throughput"),
        Workload("upload-8x128m", "upload", 8, 128 * MiB, "8 medium files at once", "many"),
        Workload("upload-256x4m", "upload", 256, 4 * MiB, "many single-PUT files", "many"),
        Workload(
            "upload-2000x64k", "upload", 2000, 64 * KiB, "tiny files: per-request cost", "many"
        ),
        Workload("download-256x4m", "download", 256, 4 * MiB, "many single-GET objects", "many"),
        Workload("download-2g", "download", 1, 2 * GiB, "one 2 GiB object"),
        Workload(
            "upload-1b",
            "upload",
            1,
            1,
            "one 1-byte file: the whole process's start-up cost (cp-1b)",
            "startup",
        ),
        Workload(
            "download-1b",
            "download",
            1,
            1,
            "one 1-byte object: the whole process's start-up cost (cp-1b)",
            "startup",
        ),
    )
}
"""Every workload by name.  ``--workloads`` picks from these (and from ``GROUPS``)."""

GROUPS: dict[str, tuple[str, ...]] = {
    "cp-1b": ("upload-1b", "download-1b"),
    # What issue #13's must-show targets need (with the concurrency sweep on download-1g).
    "must-show": ("upload-1g", "download-1g", "upload-2000x64k", "upload-1b", "download-1b"),
}
"""Names that select several workloads at once."""

DEFAULT_WORKLOADS = ("all",)

LATENCY_WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("lat-upload", "upload", 1, 256 * MiB, "one file through the shaping proxy"),
        Workload("lat-download", "download", 1, 256 * MiB, "one object through the shaping proxy"),
        Workload(
            "lat-sweep-upload",
            "upload",
            1,
            512 * MiB,
            "one file through the shaping proxy, fastxfer's --concurrency sweep only",
        ),
        Workload(
            "lat-sweep-download",
            "download",
            1,
            512 * MiB,
            "one object through the shaping proxy, fastxfer's --concurrency sweep only",
        ),
    )
}
"""The high-latency profile's workloads (size: ``--latency-size``, and
``--latency-sweep-size`` for the sweep's own)."""

LATENCY_SWEEP_ONLY = ("lat-sweep-upload", "lat-sweep-download")
"""Latency workloads only fastxfer's --concurrency sweep runs: an object with enough
16 MiB parts (32 at 512 MiB) for more connections to pay, which the scaling rows'
160 MiB object, 10 parts at fastxfer's part size, does not have."""


def select(names: str, known: dict[str, Workload] | None = None) -> list[Workload]:
    known = WORKLOADS if known is None else known
    out: list[Workload] = []
    for raw in names.split(","):
        name = raw.strip()
        if not name:
            continue
        if name == "all":
            out.extend(w for w in known.values() if w not in out)
            continue
        if name in GROUPS and known is WORKLOADS:
            out.extend(known[n] for n in GROUPS[name] if known[n] not in out)
            continue
        if name not in known:
            choices = [*known, *(GROUPS if known is WORKLOADS else ())]
            raise KeyError(f"unknown workload {name!r}; choose from: {', '.join(choices)}")
        if known[name] not in out:
            out.append(known[name])
    if not out:
        raise KeyError("no workload selected")
    return out
