"""Housekeeping commands: ``fastxfer abort-uploads``, and ``fastxfer bench``'s pointer."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from fastxfer.cli.common import (
    EXIT_USAGE,
    Parser,
    Subparsers,
    add_command,
    add_connection_options,
    config_from_args,
    run_async,
)
from fastxfer.manager import TransferManager
from fastxfer.restore import parse_duration
from fastxfer.s3url import parse_s3_url

BENCH_HINT = (
    "fastxfer: the benchmark suite is not installed with fastxfer; from a source checkout "
    "run `scripts/dev.sh bench` (or `python -m benchmarks.run`), see benchmarks/README.md"
)


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(
        sub,
        "abort-uploads",
        _cmd_abort_uploads,
        help="abort incomplete multipart uploads (what a killed process leaves behind)",
        description="List and abort incomplete multipart uploads under s3://BUCKET[/PREFIX]. "
        "They are invisible in listings but billed as storage.",
    )
    p.add_argument("url", help="s3://bucket[/prefix]")
    p.add_argument(
        "--older-than",
        default="1h",
        help="only uploads started this long ago (default 1h; 0 for all), e.g. 30m, 2h, 1d",
    )
    p.add_argument("--dry-run", action="store_true", help="list them, abort nothing")
    p.add_argument(
        "--include-resumable",
        action="store_true",
        help="also abort uploads this machine's journal could resume (spared by default)",
    )
    add_connection_options(p)
    p.add_argument("--json", action="store_true", help="JSON lines on stdout, one per upload")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")

    # Listed in --help only: main() answers `fastxfer bench ...` before parsing.
    add_command(
        sub,
        "bench",
        bench,
        help="how to run the benchmark suite (from a source checkout)",
        add_help=False,
    )


def bench(_: object) -> int:
    """The benchmarks are not part of the wheel: say where they are, exit 2."""
    print(BENCH_HINT, file=sys.stderr)
    return EXIT_USAGE


def _cmd_abort_uploads(args: argparse.Namespace) -> int:
    return run_async(_abort_uploads(args))


async def _abort_uploads(args: argparse.Namespace) -> int:
    older = 0.0 if args.older_than in ("0", "0s") else parse_duration(args.older_than)
    url = parse_s3_url(args.url)
    cfg = config_from_args(args)
    resumable = bool(getattr(args, "include_resumable", False))
    async with TransferManager(cfg) as tm:
        plan = await tm.plan_abort(
            url.bucket, url.key, older_than=older, include_resumable=resumable
        )
        if args.dry_run:
            found = plan.abort
        else:
            found = await tm.abort_incomplete_uploads(
                url.bucket, url.key, older_than=older, include_resumable=resumable
            )
    younger = sum(1 for _, why in plan.spared if why == "younger")
    journaled = sum(1 for _, why in plan.spared if why == "resumable")
    for u in found:
        started = u.get("Initiated")
        when = started.isoformat() if isinstance(started, datetime) else "?"
        if args.json:
            print(json.dumps({"key": u["Key"], "upload_id": u["UploadId"], "initiated": when}))
        else:
            print(f"{'would abort' if args.dry_run else 'aborted'} {when} {u['Key']}")
    if not args.json and not args.quiet:
        summary = _abort_summary(len(found), younger, journaled, args, older)
        print(summary, file=sys.stderr)
    return 0


def _abort_summary(
    found: int, younger: int, resumable: int, args: argparse.Namespace, older: float
) -> str:
    """``0 incomplete uploads older than 1h to abort (2 younger ones spared)``."""
    uploads = "incomplete upload" if found == 1 else "incomplete uploads"
    age = f" older than {args.older_than}" if older else ""
    text = f"{found} {uploads}{age}{' to abort' if args.dry_run else ' aborted'}"
    notes = []
    if younger:
        notes.append(f"{younger} younger {'one' if younger == 1 else 'ones'} spared")
    if resumable:
        notes.append(
            f"{resumable} resumable from this machine's journal spared; "
            "run the same upload again to finish it, or pass --include-resumable"
        )
    return text + (f" ({', '.join(notes)})" if notes else "")


def _age(upload: dict[str, Any], now: datetime) -> float:
    """Seconds since the upload started (infinite when the server did not say)."""
    started = upload.get("Initiated")
    return (now - started).total_seconds() if isinstance(started, datetime) else float("inf")
