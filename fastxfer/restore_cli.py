"""``fastxfer restore`` and ``fastxfer restore-status``.

The lead wires these into :mod:`fastxfer.cli` with :func:`add_parsers`; for
tests and standalone use, ``python -m fastxfer.restore_cli restore ...`` runs
them through :func:`main`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fastxfer.config import TransferConfig
from fastxfer.errors import FastxferError, UsageError
from fastxfer.restore import (
    PriceTable,
    RestoreJob,
    RestoreOptions,
    RestoreTier,
    parse_duration,
    summarize_estimate,
    summarize_report,
)
from fastxfer.s3url import parse_s3_url


def add_parsers(
    subparsers: Any, common: Callable[[argparse.ArgumentParser], None]
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """Add ``restore`` and ``restore-status`` to ``subparsers``.

    ``common`` adds the connection options (--endpoint-url, --profile,
    --region, --no-verify-ssl).  Returns the two parsers.
    """
    r = subparsers.add_parser(
        "restore",
        help="restore objects from GLACIER / DEEP_ARCHIVE (and download them as they thaw)",
        description="Request a restore of every archived object under s3://BUCKET/PREFIX/ or "
        "of the listed s3://BUCKET/KEY, wait for them cheaply (one LIST per 1,000 objects), "
        "and with --download save each one as soon as it is readable.  The job is kept in a "
        "sqlite file: run the same command again to resume it.",
    )
    r.add_argument(
        "urls", nargs="+", metavar="S3URL", help="s3://bucket/prefix/ or s3://bucket/key"
    )
    r.add_argument(
        "--tier",
        default="Standard",
        type=RestoreTier.parse,
        help="Expedited (minutes; not for DEEP_ARCHIVE), Standard (hours, default) or Bulk",
    )
    r.add_argument("--days", type=int, default=7, help="days the restored copy lasts (7)")
    r.add_argument(
        "--tps",
        type=float,
        default=50.0,
        help="RestoreObject requests per second (50, i.e. 180,000 an hour; 0: no cap)",
    )
    r.add_argument(
        "--poll-interval",
        type=parse_duration,
        default=None,
        help="time between polls, e.g. 30s, 5m (default: from the tier, 1 min to 4 h)",
    )
    r.add_argument("--download", metavar="DIR", default=None, help="download objects here")
    r.add_argument("--concurrency", type=int, default=32, help="requests in flight (32)")
    r.add_argument("--dry-run", action="store_true", help="print requests and price, do nothing")
    r.add_argument("--prices", metavar="FILE", default=None, help="price table (JSON)")
    _state_and_output(r)
    common(r)

    s = subparsers.add_parser(
        "restore-status",
        help="show the state of a restore job (one cheap poll)",
        description="Load a restore job from its state file and poll the objects still "
        "restoring once.  Give the same URLs as to `fastxfer restore`, or --state.",
    )
    s.add_argument("urls", nargs="*", metavar="S3URL", help="as given to `fastxfer restore`")
    _state_and_output(s)
    common(s)
    return r, s


def _state_and_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="FILE", default=None, help="job state file (sqlite)")
    p.add_argument("--json", action="store_true", help="JSON output on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def _config(args: argparse.Namespace, concurrency: int = 32) -> TransferConfig:
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {concurrency}")
    return TransferConfig(
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        region=args.region,
        verify_tls=not args.no_verify_ssl,
        max_concurrency=concurrency,
    )


def _target(urls: Sequence[str]) -> tuple[str, str | None, tuple[str, ...]]:
    """(bucket, prefix, keys) from the command-line URLs."""
    parsed = [parse_s3_url(u) for u in urls]
    buckets = {u.bucket for u in parsed}
    if len(buckets) != 1:
        raise UsageError("a restore job works on one bucket", hint="run one job per bucket")
    prefixes = [u for u in parsed if u.key == "" or u.key.endswith("/")]
    if prefixes and len(parsed) > 1:
        raise UsageError("give either one prefix (s3://bucket/prefix/) or a list of keys, not both")
    bucket = parsed[0].bucket
    if prefixes:
        return bucket, prefixes[0].key, ()
    return bucket, None, tuple(u.key for u in parsed)


def _options(args: argparse.Namespace, **kw: Any) -> RestoreOptions:
    bucket, prefix, keys = _target(args.urls)
    return RestoreOptions(bucket=bucket, prefix=prefix, keys=keys, state_path=args.state, **kw)


async def run_restore(args: argparse.Namespace) -> int:
    """``fastxfer restore``: exit 0 when every object is restored (and downloaded)."""
    from fastxfer.manager import TransferManager

    opts = _options(
        args,
        tier=args.tier,
        days=args.days,
        tps=args.tps,
        poll_interval=args.poll_interval,
        download_dir=os.path.abspath(args.download) if args.download else None,
    )
    prices = PriceTable.load(args.prices) if (args.prices or args.dry_run) else None
    async with TransferManager(_config(args, args.concurrency)) as tm:
        job = RestoreJob(tm, opts, prices=prices)
        if args.dry_run:
            est = await job.estimate()
            if args.json:
                print(json.dumps({"dry_run": True, **est.to_dict()}, indent=2))
            elif not args.quiet:
                print(summarize_estimate(est))
            return 0
        if not args.quiet and not args.json:
            print(f"restore job state: {job.state_path}", file=sys.stderr)
        report = await job.run()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        print(summarize_report(report))
    return 1 if report.failed else 0


async def run_restore_status(args: argparse.Namespace) -> int:
    """``fastxfer restore-status``: exit 0 when every object is readable."""
    from fastxfer.manager import TransferManager
    from fastxfer.restore import ObjectState, RestoreStore

    if args.urls:
        opts = _options(args)
    elif args.state:
        store = RestoreStore(args.state) if os.path.exists(args.state) else None
        spec = store.spec() if store else None
        if store:
            store.close()
        if spec is None:
            raise UsageError(f"no restore job in {args.state}")
        opts = RestoreOptions(
            bucket=spec["bucket"],
            prefix=spec["prefix"],
            keys=tuple(spec["keys"]),
            tier=RestoreTier.parse(spec["tier"]),
            days=int(spec["days"]),
            state_path=args.state,
        )
    else:
        raise UsageError("give the job's S3 URLs or --state FILE")
    async with TransferManager(_config(args)) as tm:
        report = await RestoreJob(tm, opts).status()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        print(summarize_report(report))
    pending = report.count(ObjectState.COLD) + report.count(ObjectState.RESTORING)
    return 1 if pending or report.failed else 0


def _connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
    )
    p.add_argument("--profile", default=os.environ.get("AWS_PROFILE"))
    p.add_argument("--region", default=None)
    p.add_argument("--no-verify-ssl", action="store_true")


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m fastxfer.restore_cli restore ...``)."""
    parser = argparse.ArgumentParser(prog="fastxfer")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub, _connection_options)
    args = parser.parse_args(argv)
    handler = run_restore if args.command == "restore" else run_restore_status
    try:
        return asyncio.run(handler(args))
    except FastxferError as exc:
        print(f"fastxfer: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fastxfer: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
