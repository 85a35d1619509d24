"""Throttling against a real server: bandwidth caps, the timetable, SlowDown back-off."""

from __future__ import annotations

import asyncio
import datetime
import os
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import tmpfs_dir

from fastxfer import BaseSubscriber, ProgressEvent, TransferConfig, TransferManager
from fastxfer.clock import SystemClock
from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server
from fastxfer.tokenbucket import default_burst

# Every test here runs on both request paths (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")


class RateLog(BaseSubscriber):
    """Bytes moved, stamped with time.monotonic()."""

    def __init__(self) -> None:
        self.points: list[tuple[float, int]] = []

    def on_progress(self, event: ProgressEvent) -> None:
        self.points.append((time.monotonic(), event.bytes_delta))

    def max_window(self, width: float = 1.0) -> int:
        """Most bytes moved in any window of ``width`` seconds."""
        best, lo, total = 0, 0, 0
        for hi in range(len(self.points)):
            total += self.points[hi][1]
            while self.points[hi][0] - self.points[lo][0] > width:
                total -= self.points[lo][1]
                lo += 1
            best = max(best, total)
        return best

    def rate_between(self, t0: float, t1: float) -> float:
        return sum(n for t, n in self.points if t0 <= t < t1) / (t1 - t0)


def src_file(work_dir: str, size: int) -> str:
    path = os.path.join(work_dir, f"src-{size}")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


async def test_total_cap_holds_and_is_reached(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str
) -> None:
    cap = 8 * MiB
    src = src_file(work_dir, 24 * MiB)
    log = RateLog()
    async with TransferManager(make_config(bwlimit=cap, part_size=5 * MiB)) as tm:
        t0 = time.monotonic()
        await tm.upload(src, bucket, "capped", subscribers=[log])
        elapsed = time.monotonic() - t0
    assert log.max_window(1.0) <= cap + default_burst(cap) + 256 * 1024
    assert 24 * MiB / elapsed >= 0.8 * cap
    assert elapsed >= 24 * MiB / (cap + default_burst(cap)) - 0.1  # the bucket starts empty


async def test_download_cap(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str
) -> None:
    cap = 6 * MiB
    src = src_file(work_dir, 18 * MiB)
    async with TransferManager(make_config()) as tm:
        await tm.upload(src, bucket, "obj")
    log = RateLog()
    async with TransferManager(make_config(bwlimit_down=cap)) as tm:
        t0 = time.monotonic()
        await tm.download(bucket, "obj", os.path.join(work_dir, "dst"), subscribers=[log])
        elapsed = time.monotonic() - t0
    assert log.max_window(1.0) <= cap + default_burst(cap) + 256 * 1024
    assert 18 * MiB / elapsed >= 0.8 * cap


async def test_per_connection_cap_with_several_connections(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str
) -> None:
    per_conn = 2 * MiB
    srcs = [src_file(work_dir, 6 * MiB + i) for i in range(4)]
    log = RateLog()
    async with TransferManager(
        make_config(bwlimit_per_connection=per_conn, max_concurrency=4), subscribers=[log]
    ) as tm:
        t0 = time.monotonic()
        await asyncio.gather(*(tm.upload(p, bucket, f"k{i}") for i, p in enumerate(srcs)))
        elapsed = time.monotonic() - t0
    total = sum(os.path.getsize(p) for p in srcs)
    # Each connection is capped, so four run at about 4 x 2 MiB/s together.
    assert log.max_window(1.0) <= 4 * (per_conn + default_burst(per_conn))
    assert total / elapsed >= 0.8 * 4 * per_conn


class ShiftedClock(SystemClock):
    """Real time, but the wall clock reads ``start`` when the test begins."""

    def __init__(self, start: datetime.datetime) -> None:
        self._offset = start - datetime.datetime.now()

    def now(self) -> datetime.datetime:
        return datetime.datetime.now() + self._offset


async def test_timetable_switches_cap_mid_transfer(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str
) -> None:
    # A Monday, 2.5 s before the 08:00 switch from 8 MiB/s to 2 MiB/s.
    clock = ShiftedClock(datetime.datetime(2026, 11, 30, 7, 59, 57, 500000))
    cfg = make_config(bwlimit_schedule="Mon-Fri 08:00-18:00 2MiB/s, otherwise 8MiB/s")
    src = src_file(work_dir, 30 * MiB)
    log = RateLog()
    async with TransferManager(cfg, clock=clock) as tm:
        t0 = time.monotonic()
        h = tm.upload(src, bucket, "scheduled", subscribers=[log])
        await asyncio.sleep(5.5)
        h.cancel()
        with pytest.raises(asyncio.CancelledError):
            await h
    before = log.rate_between(t0 + 0.5, t0 + 2.3)
    after = log.rate_between(t0 + 3.0, t0 + 5.5)
    assert before >= 0.75 * 8 * MiB
    assert after <= 2 * MiB + default_burst(2 * MiB)
    assert after >= 0.6 * 2 * MiB


@pytest.fixture(scope="module")
def one_upload_server() -> Iterator[LocalS3Server]:
    """rclone answering a second concurrent CreateMultipartUpload with 503 SlowDown."""
    with (
        tempfile.TemporaryDirectory(prefix="fx-slow-", dir=tmpfs_dir()) as root,
        LocalS3Server(root=root, extra_args=("--multipart-max-uploads", "1")) as srv,
    ):
        yield srv


async def test_slowdown_backs_off_and_every_upload_completes(
    one_upload_server: LocalS3Server, work_dir: str
) -> None:
    srv = one_upload_server
    bucket = srv.make_bucket()
    srcs = [src_file(work_dir, 12 * MiB + i) for i in range(8)]
    cfg = TransferConfig(
        endpoint_url=srv.endpoint_url,
        aws_access_key_id=srv.access_key,
        aws_secret_access_key=srv.secret_key,
        part_size=5 * MiB,
        multipart_threshold=5 * MiB,
        max_concurrency=16,
    )
    async with TransferManager(cfg) as tm:
        results = await asyncio.gather(
            *(tm.upload(p, bucket, f"u{i}") for i, p in enumerate(srcs)), return_exceptions=True
        )
        stats = tm.stats()
        assert await tm.list_multipart_uploads(bucket) == []
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert stats.pacer.throttles > 0  # the server did push back
    s3 = srv.client()
    sizes = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert sizes == {f"u{i}": os.path.getsize(p) for i, p in enumerate(srcs)}
