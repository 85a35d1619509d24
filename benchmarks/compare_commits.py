"""Two commits of fastxfer side by side in one run: 1 GiB upload and download.

For a change that must not move speed (a refactor), the question is "old vs
new, same machine, same minute".  Both versions run the same public API
(TransferConfig / TransferManager, uvloop, ``runtime.tune_process`` as the CLI
does) in child processes whose ``PYTHONPATH`` points at a checkout of each
commit; rounds alternate the order.  Every uploaded object is HEADed once,
untimed, before it is downloaded: rclone serve s3 computes an object's MD5 ETag
on its first HEAD or GET (~2 CPU-s per fresh GiB), which whoever reads first
would otherwise pay.

    python -m benchmarks.compare_commits --old 7e8e199 --rounds 5

Writes a Markdown table to benchmarks/results/ (and prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastxfer.localserver import LocalS3Server
from fastxfer.units import format_size, parse_size

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

CHILD = r"""
import asyncio, json, os, resource, sys, time
from fastxfer import TransferConfig, TransferManager
from fastxfer.runtime import tune_process
import uvloop

direction, bucket, key, local, endpoint, ak, sk = sys.argv[1:8]
tune_process()
cfg = TransferConfig(endpoint_url=endpoint, region="us-east-1",
                     aws_access_key_id=ak, aws_secret_access_key=sk)

async def main():
    async with TransferManager(cfg) as tm:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        if direction == "upload":
            st = await tm.upload(local, bucket, key)
        else:
            st = await tm.download(bucket, key, local)
        t1 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {"seconds": t1 - t0, "cpu": cpu, "bytes": st.bytes_done, "verified": st.verified}

print(json.dumps(uvloop.run(main())))
"""


def _tree(commit: str, workdir: Path) -> Path:
    if commit == "worktree":
        return ROOT
    dest = workdir / f"tree-{commit}"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(dest), commit],
        check=True,
        capture_output=True,
    )
    return dest


def _child(tree: Path, *argv: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    r = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=tempfile.gettempdir(),  # so `fastxfer` comes from PYTHONPATH only
    )
    if r.returncode != 0:
        raise SystemExit(f"child failed ({tree}): {r.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="commit to compare against (e.g. 7e8e199)")
    p.add_argument("--new", default="worktree", help="commit, or 'worktree' (default)")
    p.add_argument("--size", default="1GiB", help="object size (default 1GiB)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (each runs both commits)")
    p.add_argument("--name", default="structure-compare", help="result file name")
    args = p.parse_args(argv)
    size = parse_size(args.size)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and shutil.disk_usage(shm).free > 4 * size else None
    workdir = Path(tempfile.mkdtemp(prefix="fx-compare-", dir=base))
    trees: dict[str, Path] = {}
    try:
        for label, commit in (("old", args.old), ("new", args.new)):
            trees[label] = _tree(commit, workdir)
        src = workdir / "src.bin"
        with open(src, "wb") as f:
            left = size
            while left:
                n = min(left, 64 << 20)
                f.write(os.urandom(n))
                left -= n
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        with LocalS3Server(root=str(workdir / "s3")) as srv:
            os.makedirs(workdir / "s3", exist_ok=True)
            bucket = srv.make_bucket()
            s3 = srv.client()
            creds = (srv.endpoint_url, srv.access_key, srv.secret_key)
            for rnd in range(args.rounds):
                order = ["old", "new"] if rnd % 2 == 0 else ["new", "old"]
                for label in order:
                    key = f"{label}-{rnd}"
                    up = _child(trees[label], "upload", bucket, key, str(src), *creds)
                    s3.head_object(Bucket=bucket, Key=key)  # warm the ETag, untimed
                    dest = workdir / f"dl-{label}"
                    down = _child(trees[label], "download", bucket, key, str(dest), *creds)
                    if dest.stat().st_size != size:
                        raise SystemExit(f"{label}: downloaded {dest.stat().st_size} bytes")
                    dest.unlink()
                    s3.delete_object(Bucket=bucket, Key=key)
                    results.setdefault((label, "upload"), []).append(up)
                    results.setdefault((label, "download"), []).append(down)
                    print(
                        f"round {rnd + 1} {label}: up {size / up['seconds'] / 1e6:.0f} MB/s, "
                        f"down {size / down['seconds'] / 1e6:.0f} MB/s",
                        flush=True,
                    )
                    time.sleep(1.0)
        table = _render(args, size, results)
        print(table)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"{args.name}.md").write_text(table, encoding="utf-8")
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                    check=False,
                    capture_output=True,
                )
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _render(
    args: argparse.Namespace, size: int, results: dict[tuple[str, str], list[dict[str, Any]]]
) -> str:
    lines = [
        f"# fastxfer {args.old} (old) vs {args.new} (new), {format_size(size)}",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.rounds} interleaved rounds;"
        " embedded rclone serve s3 on tmpfs; objects warmed (HEAD) before download;"
        " default TransferConfig (32 connections, 16 MiB parts).",
        "",
        "| direction | version | median MB/s | runs MB/s | median CPU s/GiB |",
        "|---|---|---|---|---|",
    ]
    for direction in ("upload", "download"):
        for label in ("old", "new"):
            runs = results[(label, direction)]
            rates = [size / r["seconds"] / 1e6 for r in runs]
            cpu = [r["cpu"] / (size / 2**30) for r in runs]
            lines.append(
                f"| {direction} | {label} | {statistics.median(rates):.0f} | "
                f"{', '.join(f'{x:.0f}' for x in rates)} | {statistics.median(cpu):.2f} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
