"""``fastxfer restore`` and ``fastxfer restore-status``: cold objects back, cheaply."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from fastxfer.cli.common import (
    Interrupted,
    JsonErrors,
    Parser,
    Subparsers,
    add_command,
    add_concurrency_option,
    add_connection_options,
    config_from_args,
    report_interrupted,
    run_async,
)
from fastxfer.errors import UsageError
from fastxfer.manager import TransferManager
from fastxfer.restore import (
    ObjectState,
    PriceTable,
    RestoreOptions,
    RestoreStore,
    RestoreTier,
    default_state_path,
    parse_duration,
    summarize_estimate,
    summarize_report,
)
from fastxfer.s3url import parse_s3_url

RESUME_HINT = "run the same command again to resume"


def register(sub: Subparsers[Parser]) -> None:
    r = add_command(
        sub,
        "restore",
        _cmd_restore,
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
        dest="restore_tps",  # not the config's tps (every request kind)
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
    add_concurrency_option(r)
    r.add_argument("--dry-run", action="store_true", help="print requests and price, do nothing")
    r.add_argument("--prices", metavar="FILE", default=None, help="price table (JSON)")
    _state_and_output(r)
    add_connection_options(r)

    s = add_command(
        sub,
        "restore-status",
        _cmd_restore_status,
        help="show the state of a restore job (one cheap poll)",
        description="Load a restore job from its state file and poll the objects still "
        "restoring once.  Give the same URLs as to `fastxfer restore`, or --state.",
    )
    s.add_argument("urls", nargs="*", metavar="S3URL", help="as given to `fastxfer restore`")
    _state_and_output(s)
    add_connection_options(s)


def _state_and_output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", metavar="FILE", default=None, help="job state file (sqlite)")
    p.add_argument("--json", action="store_true", help="JSON output on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")


def _target(urls: Sequence[str]) -> tuple[str, str | None, tuple[str, ...]]:
    """(bucket, prefix, keys) from the command-line URLs."""
    parsed = [parse_s3_url(u) for u in urls]
    buckets = {u.bucket for u in parsed}
    if len(buckets) != 1:
        raise UsageError("a restore job works on one bucket", hint="run one job per bucket")
    prefixes = [u for u in parsed if u.is_prefix]
    if prefixes and len(parsed) > 1:
        raise UsageError("give either one prefix (s3://bucket/prefix/) or a list of keys, not both")
    bucket = parsed[0].bucket
    if prefixes:
        return bucket, prefixes[0].key, ()
    return bucket, None, tuple(u.key for u in parsed)


def _options(args: argparse.Namespace, **kw: Any) -> RestoreOptions:
    bucket, prefix, keys = _target(args.urls)
    return RestoreOptions(bucket=bucket, prefix=prefix, keys=keys, state_path=args.state, **kw)


def _cmd_restore(args: argparse.Namespace) -> int:
    try:
        return run_async(_restore(args))
    except Interrupted as exc:
        return report_interrupted(exc, _resume_hint(args), JsonErrors.from_args(args))
    except KeyboardInterrupt:
        return report_interrupted(None, _resume_hint(args), JsonErrors.from_args(args))


def _resume_hint(args: argparse.Namespace) -> str:
    return f"{RESUME_HINT} (job state: {args.state or default_state_path()})"


def _cmd_restore_status(args: argparse.Namespace) -> int:
    return run_async(_restore_status(args))


async def _restore(args: argparse.Namespace) -> int:
    """Exit 0 when every object is restored (and downloaded)."""
    opts = _options(
        args,
        tier=args.tier,
        days=args.days,
        tps=args.restore_tps,
        poll_interval=args.poll_interval,
        download_dir=os.path.abspath(args.download) if args.download else None,
    )
    prices = PriceTable.load(args.prices) if (args.prices or args.dry_run) else None
    async with TransferManager(config_from_args(args)) as tm:
        job = tm.restore_job(opts, prices=prices)
        if args.dry_run:
            est = await job.estimate()
            if args.json:
                print(json.dumps({"dry_run": True, **est.to_dict()}, indent=2))
            elif not args.quiet:
                print(summarize_estimate(est))
            return 0
        report = await job.run()  # the state file is named in the summary, and if interrupted
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        print(summarize_report(report))
    return 1 if report.failed else 0


def _stored_options(state: str) -> RestoreOptions:
    """The job recorded in the state file ``state``."""
    store = RestoreStore(state) if os.path.exists(state) else None
    try:
        spec = store.spec() if store else None
    finally:
        if store:
            store.close()
    if spec is None:
        raise UsageError(f"no restore job in {state}")
    return RestoreOptions(
        bucket=spec["bucket"],
        prefix=spec["prefix"],
        keys=tuple(spec["keys"]),
        tier=RestoreTier.parse(spec["tier"]),
        days=int(spec["days"]),
        state_path=state,
    )


async def _restore_status(args: argparse.Namespace) -> int:
    """Exit 0 when every object is readable."""
    if args.urls:
        opts = _options(args)
    elif args.state:
        opts = _stored_options(args.state)
    else:
        raise UsageError("give the job's S3 URLs or --state FILE")
    async with TransferManager(config_from_args(args)) as tm:
        report = await tm.restore_job(opts).status()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    elif not args.quiet:
        print(summarize_report(report))
    pending = report.count(ObjectState.COLD) + report.count(ObjectState.RESTORING)
    return 1 if pending or report.failed else 0
