"""Part planning: how an object is cut into parts (upload) and ranges (download).

The transfers and the restore cost estimate use the same functions, so a
printed estimate equals what a run makes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastxfer.errors import InvalidConfig
from fastxfer.limits import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, MiB

if TYPE_CHECKING:
    from fastxfer.config import TransferConfig


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


def upload_part_size(size: int, cfg: TransferConfig, connections: int | None = None) -> int:
    """Bytes per part for a multipart upload of ``size`` bytes.

    ``part_size`` at most, and smaller (5 MiB at least) when parts of
    ``part_size`` would be fewer than the requests allowed in flight
    (``connections``, the tuned count once the first answer has judged the
    path; ``max_concurrency`` when not given), which would leave connections
    idle: over the WAN profile (40 ms, 8 MB/s a connection, 64 connections) a
    160 MiB file went in 10 parts of 16 MiB, 10 connections busy.  On a short
    path the count is 8 and only files under 8 parts (128 MiB) are affected.
    """
    # fit_part_size keeps it at 5 MiB at least (and 10,000 parts at most).
    return fit_part_size(size, min(cfg.part_size, _per_connection(size, cfg, connections)))


def _per_connection(size: int, cfg: TransferConfig, connections: int | None) -> int:
    """``size`` split over the requests allowed in flight, rounded up to a whole MiB."""
    count = cfg.max_concurrency if connections is None else min(connections, cfg.max_concurrency)
    share = -(-size // max(1, count))
    return -(-share // MiB) * MiB


MAX_AUTO_RANGE = 64 * 1024 * 1024


def range_size(size: int, cfg: TransferConfig, connections: int | None = None) -> int:
    """Bytes per ranged GET for an object of ``size`` bytes.

    ``download_part_size`` when set; otherwise enough ranges to keep every
    connection busy, but as few and as large as that allows (5 MiB to 64 MiB):
    fewer requests for the same parallelism.  ``connections`` is the number of
    requests allowed in flight when the download starts (the tuned count),
    ``max_concurrency`` when not given.

    Measured on loopback, where the tuner settles on 8 connections, 1 GiB from
    rclone serve s3 side by side: 64 MiB ranges 936 MB/s, 1.09 client and 0.73
    server CPU-s/GiB, against 777 MB/s, 1.27 and 0.90 in 16 MiB ranges (sized for
    all 64 connections).  Over the WAN profile (40 ms, 8 MB/s a connection) the
    count is the whole budget and the ranges are as small as that needs: a
    160 MiB object in 32 ranges of 5 MiB rather than 10 of ``part_size``
    (16 MiB), which had left 54 of the 64 connections idle (73 MB/s).
    """
    if cfg.download_part_size:
        return fit_part_size(size, cfg.download_part_size)
    # fit_part_size keeps it at 5 MiB at least (and 10,000 ranges at most).
    return fit_part_size(size, min(MAX_AUTO_RANGE, _per_connection(size, cfg, connections)))


def download_get_count(size: int, cfg: TransferConfig, connections: int | None = None) -> int:
    """GET requests a download of an object of ``size`` bytes makes (no retries).

    One GET below ``multipart_threshold`` (and for an empty object), else one
    per range of :func:`range_size`.  Without ``connections`` this is the count
    at the whole budget (``max_concurrency``), the most a download makes: with
    fewer connections allowed when it starts, ranges are larger and fewer.
    """
    if size == 0 or size < cfg.multipart_threshold:
        return 1
    return -(-size // range_size(size, cfg, connections))


MAX_AUTO_COPY_PART = 1024 * MiB


def copy_part_size(size: int, cfg: TransferConfig) -> int:
    """Bytes per UploadPartCopy for a server-side copy of ``size`` bytes.

    No data crosses the client, so parts are as large as still keeps every
    connection busy (``part_size`` to 1 GiB): fewer requests, same parallelism.
    """
    per_connection = -(-size // cfg.max_concurrency)
    part = max(cfg.part_size, min(MAX_AUTO_COPY_PART, -(-per_connection // MiB) * MiB))
    return fit_part_size(size, part)


def retry_budget(max_attempts: int, ranges: int) -> int:
    """Retries one download may make in all: ``max_attempts`` per range, at least 10.

    Each range also gives up after ``max_attempts`` failures in a row; this
    bounds a link that fails again after every bit of progress.
    """
    return max(10, max_attempts * ranges)
