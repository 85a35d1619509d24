"""Throttling scenarios with recorded results (issue: throttling and pacing).

    python -m benchmarks.throttle_scenarios            # both scenarios, ~1 min
    python -m benchmarks.throttle_scenarios --only cap

1. ``cap``: a 512 MiB upload capped at 16 MiB/s (``bwlimit``) against the
   embedded rclone serve s3 on tmpfs.  Records the wall time and the bytes
   moved in every 1 s window (from progress events, which fire as 256 KiB
   slices reach the socket).
2. ``slowdown``: rclone serve s3 with ``--multipart-max-uploads 1`` answers a
   second concurrent CreateMultipartUpload with 503 SlowDown; 32 concurrent
   uploads of 64 MiB must all complete with no orphaned multipart upload.

Writes ``benchmarks/results/throttle-<timestamp>.md`` / ``.json`` and
``throttle-latest.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from fastxfer import BaseSubscriber, ProgressEvent, TransferConfig, TransferManager
from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server
from fastxfer.tokenbucket import default_burst

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class _Rate(BaseSubscriber):
    def __init__(self) -> None:
        self.points: list[tuple[float, int]] = []

    def on_progress(self, event: ProgressEvent) -> None:
        self.points.append((time.monotonic(), event.bytes_delta))

    def per_second(self, t0: float) -> list[int]:
        """Bytes in each whole second since t0 (aligned windows)."""
        out: list[int] = []
        for t, n in self.points:
            i = int(t - t0)
            while len(out) <= i:
                out.append(0)
            out[i] += n
        return out

    def max_sliding(self, width: float = 1.0) -> int:
        best, lo, total = 0, 0, 0
        for hi in range(len(self.points)):
            total += self.points[hi][1]
            while self.points[hi][0] - self.points[lo][0] > width:
                total -= self.points[lo][1]
                lo += 1
            best = max(best, total)
        return best


@dataclass
class CapResult:
    size: int
    cap: float
    burst: float
    seconds: float
    per_second_mib: list[float] = field(default_factory=list)
    max_sliding_1s_mib: float = 0.0
    within_32_pm_3: bool = False
    never_above_cap_plus_burst: bool = False


@dataclass
class SlowDownResult:
    uploads: int
    size: int
    seconds: float
    failures: int
    throttles: int
    final_upload_limit: int
    orphaned_uploads: int
    verified_sizes: bool


def _source(work: str, name: str, size: int) -> str:
    path = os.path.join(work, name)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n
    return path


async def run_cap(srv: LocalS3Server, work: str) -> CapResult:
    size, cap = 512 * MiB, 16 * MiB
    src = _source(work, "cap.bin", size)
    bucket = srv.make_bucket()
    cfg = TransferConfig(
        endpoint_url=srv.endpoint_url,
        aws_access_key_id=srv.access_key,
        aws_secret_access_key=srv.secret_key,
        bwlimit=cap,
    )
    rate = _Rate()
    async with TransferManager(cfg) as tm:
        t0 = time.monotonic()
        await tm.upload(src, bucket, "cap.bin", subscribers=[rate])
        seconds = time.monotonic() - t0
    os.unlink(src)
    burst = default_burst(cap)
    per_sec = [round(b / MiB, 2) for b in rate.per_second(t0)]
    sliding = rate.max_sliding(1.0) / MiB
    return CapResult(
        size=size,
        cap=cap,
        burst=burst,
        seconds=round(seconds, 2),
        per_second_mib=per_sec,
        max_sliding_1s_mib=round(sliding, 2),
        within_32_pm_3=29.0 <= seconds <= 35.0,
        never_above_cap_plus_burst=sliding * MiB <= cap + burst,
    )


async def run_slowdown(work: str) -> SlowDownResult:
    n, size = 32, 64 * MiB
    src = [_source(work, f"s{i}.bin", size) for i in range(n)]
    with (
        tempfile.TemporaryDirectory(prefix="fx-slowdown-", dir=work) as root,
        LocalS3Server(root=root, extra_args=("--multipart-max-uploads", "1")) as srv,
    ):
        bucket = srv.make_bucket()
        cfg = TransferConfig(
            endpoint_url=srv.endpoint_url,
            aws_access_key_id=srv.access_key,
            aws_secret_access_key=srv.secret_key,
            max_concurrency=32,
        )
        async with TransferManager(cfg) as tm:
            t0 = time.monotonic()
            results = await asyncio.gather(
                *(tm.upload(p, bucket, f"vol{i:02d}") for i, p in enumerate(src)),
                return_exceptions=True,
            )
            seconds = time.monotonic() - t0
            stats = tm.stats()
            orphans = len(await tm.list_multipart_uploads(bucket))
        listed = srv.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        sizes_ok = len(listed) == n and all(o["Size"] == size for o in listed)
    for p in src:
        os.unlink(p)
    return SlowDownResult(
        uploads=n,
        size=size,
        seconds=round(seconds, 2),
        failures=sum(1 for r in results if isinstance(r, BaseException)),
        throttles=stats.pacer.throttles,
        final_upload_limit=stats.pacer.upload_limit,
        orphaned_uploads=orphans,
        verified_sizes=sizes_ok,
    )


def _markdown(stamp: str, cap: CapResult | None, slow: SlowDownResult | None) -> str:
    lines = [f"# Throttling scenarios — {stamp}", ""]
    if cap:
        lines += [
            "## 512 MiB upload capped at 16 MiB/s (`--bwlimit 16MiB`)",
            "",
            f"- wall time: **{cap.seconds} s** (target 32 ± 3 s): "
            f"{'PASS' if cap.within_32_pm_3 else 'FAIL'}",
            f"- burst: {cap.burst / MiB:.1f} MiB; highest 1 s sliding window: "
            f"**{cap.max_sliding_1s_mib} MiB** (limit {(cap.cap + cap.burst) / MiB:.1f} MiB): "
            f"{'PASS' if cap.never_above_cap_plus_burst else 'FAIL'}",
            f"- MiB moved in each second: {', '.join(str(x) for x in cap.per_second_mib)}",
            "",
        ]
    if slow:
        ok = slow.failures == 0 and slow.orphaned_uploads == 0 and slow.verified_sizes
        lines += [
            "## SlowDown: 32 concurrent 64 MiB uploads, rclone `--multipart-max-uploads 1`",
            "",
            f"- {slow.uploads} uploads in {slow.seconds} s; failures **{slow.failures}**; "
            f"orphaned multipart uploads **{slow.orphaned_uploads}**; "
            f"every object present with the right size: {slow.verified_sizes}: "
            f"{'PASS' if ok else 'FAIL'}",
            f"- SlowDown answers absorbed: {slow.throttles}; open-upload limit at the end: "
            f"{slow.final_upload_limit} (AIMD: halved on SlowDown, +1 per window of successes)",
            "",
        ]
    lines.append("Reproduce: `python -m benchmarks.throttle_scenarios`.")
    return "\n".join(lines) + "\n"


async def _main(only: str | None) -> dict[str, Any]:
    work = tempfile.mkdtemp(
        prefix="fx-throttle-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
    )
    try:
        cap = slow = None
        if only in (None, "cap"):
            with LocalS3Server(root=os.path.join(work, "s3")) as srv:
                cap = await run_cap(srv, work)
        if only in (None, "slowdown"):
            slow = await run_slowdown(work)
        return {"cap": cap, "slowdown": slow}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.throttle_scenarios")
    ap.add_argument("--only", choices=["cap", "slowdown"])
    args = ap.parse_args(argv)
    res = asyncio.run(_main(args.only))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    cap, slow = res["cap"], res["slowdown"]
    md = _markdown(stamp, cap, slow)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"throttle-{stamp}.json"), "w") as f:
        json.dump({k: asdict(v) if v else None for k, v in res.items()}, f, indent=2)
    for name in (f"throttle-{stamp}.md", "throttle-latest.md"):
        with open(os.path.join(RESULTS, name), "w") as f:
            f.write(md)
    print(md)
    ok = (cap is None or (cap.within_32_pm_3 and cap.never_above_cap_plus_burst)) and (
        slow is None or (slow.failures == 0 and slow.orphaned_uploads == 0)
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
