"""``fastxfer ls``: buckets, or the objects (and, without -r, the "directories") under a prefix."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from fastxfer.cli.common import (
    Parser,
    Subparsers,
    add_command,
    add_connection_options,
    config_from_args,
    run_async,
)
from fastxfer.manager import TransferManager
from fastxfer.s3url import parse_s3_url


def register(sub: Subparsers[Parser]) -> None:
    p = add_command(sub, "ls", _cmd_ls, help="list buckets or objects")
    p.add_argument("url", nargs="?", default=None, help="s3://bucket[/prefix]")
    p.add_argument("-r", "--recursive", action="store_true", help="list every key under prefix")
    add_connection_options(p)
    p.add_argument("--json", action="store_true", help="JSON lines output")


def _cmd_ls(args: argparse.Namespace) -> int:
    return run_async(_ls(args))


async def _ls(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    async with TransferManager(cfg) as tm:
        if args.url is None:
            for name in await tm.list_buckets():
                print(json.dumps({"bucket": name}) if args.json else name)
            return 0
        url = parse_s3_url(args.url)
        delimiter = None if args.recursive else "/"
        async for o in tm.list_objects(url.bucket, url.key, delimiter=delimiter):
            if o.is_prefix:
                print(json.dumps({"prefix": o.key}) if args.json else f"{'PRE':>30} {o.key}")
            else:
                _print_object(o.key, o.size, o.last_modified, o.storage_class, as_json=args.json)
    return 0


def _print_object(
    key: str, size: int, modified: datetime | None, storage_class: str | None, *, as_json: bool
) -> None:
    sc = storage_class or "STANDARD"
    if as_json:
        record = {
            "key": key,
            "size": size,
            "last_modified": modified.isoformat() if modified else None,
            "storage_class": sc,
        }
        print(json.dumps(record))
    else:
        when = modified.strftime("%Y-%m-%d %H:%M:%S") if modified else "-"
        print(f"{when} {size:>12} {sc:<12} {key}")
