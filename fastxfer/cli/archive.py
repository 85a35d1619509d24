"""``fastxfer archive`` (move older backups to a cold class) and ``fastxfer lifecycle``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from fastxfer.archive import (
    ArchivePrices,
    estimate_archive,
    expiration_days,
    lifecycle_rules,
    merge_rules,
    plan_archive,
    run_archive,
)
from fastxfer.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parser,
    Subparsers,
    add_command,
    add_connection_options,
    config_from_args,
    run_async,
    warn,
)
from fastxfer.config import validate_storage_class
from fastxfer.errors import UsageError
from fastxfer.manager import TransferManager
from fastxfer.restore import parse_duration
from fastxfer.s3url import parse_s3_url
from fastxfer.units import format_size

DAY = 86400.0


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(
        sub,
        "archive",
        _cmd_archive,
        help="move older backups to an archive class, on the server",
        description="Move the data volumes of duplicity chains older than the newest N full "
        "backups (--keep-full N), or objects older than an age (--older-than 90d), to an "
        "archive storage class by server-side copy onto themselves: no data is read. "
        "Manifests and signatures stay STANDARD, so incrementals, collection-status and "
        "restore plans keep working; a restore thaws what it needs in one batch.",
    )
    p.add_argument("url", help="s3://bucket/prefix/")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--keep-full", type=int, help="keep the newest N full chains as they are")
    which.add_argument("--older-than", help="plain prefixes: objects older than this (90d)")
    p.add_argument(
        "--storage-class", default="DEEP_ARCHIVE", help="target class (default DEEP_ARCHIVE)"
    )
    p.add_argument("--dry-run", action="store_true", help="show what would move and the cost")
    p.add_argument(
        "--delete-after",
        help="when your retention deletes these backups (e.g. 120d): checked against the "
        "class's minimum storage duration (else an Expiration rule on the bucket is used)",
    )
    p.add_argument(
        "--accept-early-deletion",
        action="store_true",
        help="archive even when the retention deletes before the minimum storage duration",
    )
    p.add_argument("--prices", help="a price table JSON (default: the dated one shipped)")
    add_connection_options(p)
    p.add_argument("--json", action="store_true", help="a JSON summary on stdout")

    q = add_command(
        sub,
        "lifecycle",
        _cmd_lifecycle,
        help="print (or --apply) lifecycle rules that fit a backup layout",
        description="Rules for s3://bucket/prefix/: abort incomplete multipart uploads after "
        "--abort-days, and with --archive-prefix transition only the volumes (duplicity's "
        "--file-prefix-archive) after --transition-days. Merged with the bucket's rules.",
    )
    q.add_argument("url", help="s3://bucket/prefix/")
    q.add_argument("--archive-prefix", help="where the volumes are, under the prefix (archive/)")
    q.add_argument("--transition-days", type=int, help="days before volumes move")
    q.add_argument("--storage-class", default="DEEP_ARCHIVE", help="transition target")
    q.add_argument("--abort-days", type=int, default=7, help="incomplete uploads (default 7)")
    q.add_argument("--apply", action="store_true", help="put the merged rules on the bucket")
    add_connection_options(q)


def _cmd_archive(args: argparse.Namespace) -> int:
    return run_async(_archive(args))


async def _archive(args: argparse.Namespace) -> int:
    url = parse_s3_url(args.url)
    target = validate_storage_class(args.storage_class)
    older = parse_duration(args.older_than) / DAY if args.older_than else None
    delete_after = parse_duration(args.delete_after) / DAY if args.delete_after else None
    prices = ArchivePrices.load(args.prices)
    cfg = config_from_args(args)
    async with TransferManager(cfg) as tm:
        listing = [o async for o in tm.list_objects(url.bucket, url.key)]
        plan = plan_archive(listing, target, keep_full=args.keep_full, older_than_days=older)
        expiring = expiration_days(await tm.get_lifecycle(url.bucket), (o.key for o in plan.move))
        cost = estimate_archive(
            plan, prices, cfg, delete_after_days=delete_after, expiration=expiring
        )
        summary: dict[str, Any] = {
            "target": target,
            "objects": cost.objects,
            "bytes": cost.bytes,
            "already_in_class": plan.already,
            "chains_archived": len(plan.archived_chains),
            "chains_kept": len(plan.kept_chains),
            "copy_requests": cost.copy_requests,
            "copy_price_usd": round(cost.copy_price, 4),
            "monthly_saving_usd": round(cost.monthly_saving, 4),
            "minimum_storage_days": cost.minimum_days,
            "early_deletion_charge_usd": round(cost.early_deletion_charge, 4),
            "prices": f"{prices.source} ({prices.date})",
        }
        for o in plan.cold_source:
            warn(f"s3://{o.bucket}/{o.key} is in {o.storage_class}: restore it to move it")
        if not args.json:
            _print_plan(summary, args.dry_run)
        if cost.early_deletion_charge > 0 and not args.accept_early_deletion:
            why = "your retention (--delete-after)" if delete_after else "a lifecycle Expiration"
            raise UsageError(
                f"{why} deletes some of these objects before {target}'s minimum storage "
                f"duration of {cost.minimum_days} days: an early-deletion charge of about "
                f"${cost.early_deletion_charge:.2f}",
                hint="keep them longer, choose another class, or pass --accept-early-deletion",
            )
        if args.dry_run:
            if args.json:
                print(json.dumps(summary, indent=2))
            return EXIT_OK
        result = await run_archive(tm, plan)
    summary.update(moved=result.moved, failed=len(result.failed), requests=result.requests)
    for key, err in result.failed:
        warn(f"archive failed: {key}: {err}")
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"moved {result.moved} objects ({format_size(result.bytes)}) to {target}"
            + (f"; {len(result.failed)} failed" if result.failed else ""),
            file=sys.stderr,
        )
    return EXIT_FAILED if result.failed else EXIT_OK


def _print_plan(s: dict[str, Any], dry_run: bool) -> None:
    verb = "would move" if dry_run else "moving"
    print(
        f"{verb} {s['objects']} objects ({format_size(s['bytes'])}) to {s['target']}; "
        f"{s['already_in_class']} already there; {s['chains_archived']} chains archived, "
        f"{s['chains_kept']} kept\n"
        f"requests: {s['copy_requests']} (${s['copy_price_usd']:.4f}); monthly saving "
        f"${s['monthly_saving_usd']:.4f}; minimum storage {s['minimum_storage_days']} days; "
        f"prices: {s['prices']}",
        file=sys.stderr,
    )


def _cmd_lifecycle(args: argparse.Namespace) -> int:
    return run_async(_lifecycle(args))


async def _lifecycle(args: argparse.Namespace) -> int:
    url = parse_s3_url(args.url)
    target = validate_storage_class(args.storage_class)
    if args.abort_days < 1 or (args.transition_days is not None and args.transition_days < 0):
        warn("error: --abort-days must be >= 1 and --transition-days >= 0")
        return EXIT_USAGE
    new = lifecycle_rules(
        url.key,
        archive_prefix=args.archive_prefix,
        transition_days=args.transition_days,
        target=target,
        abort_days=args.abort_days,
    )
    cfg = config_from_args(args)
    async with TransferManager(cfg) as tm:
        merged = merge_rules(await tm.get_lifecycle(url.bucket), new)
        print(json.dumps({"Rules": merged}, indent=2, default=str))
        if args.apply:
            await tm.put_lifecycle(url.bucket, merged)
            print(f"applied {len(merged)} rules to s3://{url.bucket}", file=sys.stderr)
    return EXIT_OK
