"""Part planning: fit a size into S3's part limits."""

from __future__ import annotations

from dataclasses import dataclass

from fastxfer.errors import InvalidConfig
from fastxfer.limits import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MiB


@dataclass(frozen=True, slots=True)
class PartPlan:
    size: int
    part_size: int

    @property
    def count(self) -> int:
        if self.size == 0:
            return 1
        return -(-self.size // self.part_size)

    def part(self, number: int) -> tuple[int, int]:
        """(offset, length) of 1-based part ``number``."""
        offset = (number - 1) * self.part_size
        return offset, min(self.part_size, self.size - offset)


def fit_part_size(size: int, preferred: int) -> int:
    """The smallest part size >= ``preferred`` that fits ``size`` into 10,000 parts.

    Rounded up to a whole MiB so parts stay aligned with page-sized buffers.
    """
    if size < 0:
        raise InvalidConfig(f"negative size {size}")
    if size > MAX_OBJECT_SIZE:
        raise InvalidConfig(
            f"object of {size} bytes is larger than S3's 5 TiB limit",
            hint="split the file before uploading",
        )
    part = max(preferred, MIN_PART_SIZE)
    if -(-size // part) > MAX_PARTS:
        part = -(-size // MAX_PARTS)
        part = -(-part // MiB) * MiB
    return min(part, MAX_PART_SIZE)


def plan_parts(size: int, preferred: int) -> PartPlan:
    return PartPlan(size, fit_part_size(size, preferred))
