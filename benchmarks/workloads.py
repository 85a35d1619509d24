"""Workloads: what is transferred, by name.

A workload is a direction and a data set of ``count`` files of ``size`` bytes.
``--scale`` shrinks or grows it: the size of a single-file workload, the
number of files of a many-file one (so a 4 MiB file stays a 4 MiB file and
keeps taking the same code path, single PUT or multipart).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

Direction = Literal["upload", "download"]


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    direction: Direction
    count: int
    size: int
    summary: str

    def scaled(self, scale: float) -> ScaledWorkload:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
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
        Workload("upload-8x128m", "upload", 8, 128 * MiB, "8 medium files at once"),
        Workload("upload-256x4m", "upload", 256, 4 * MiB, "many single-PUT files"),
        Workload("upload-2000x64k", "upload", 2000, 64 * KiB, "tiny files: per-request cost"),
        Workload("download-256x4m", "download", 256, 4 * MiB, "many single-GET objects"),
        Workload("download-2g", "download", 1, 2 * GiB, "one 2 GiB object"),
    )
}
"""Every workload by name.  ``--workloads`` picks from these."""

DEFAULT_WORKLOADS = ("all",)

LATENCY_WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("lat-upload", "upload", 1, 256 * MiB, "one file through the shaping proxy"),
        Workload("lat-download", "download", 1, 256 * MiB, "one object through the shaping proxy"),
    )
}
"""The high-latency profile's workloads (size: ``--latency-size``)."""


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
        if name not in known:
            raise KeyError(f"unknown workload {name!r}; choose from: {', '.join(known)}")
        if known[name] not in out:
            out.append(known[name])
    if not out:
        raise KeyError("no workload selected")
    return out
