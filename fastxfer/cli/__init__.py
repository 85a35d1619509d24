"""The ``fastxfer`` command line.

One module per command group: :mod:`~fastxfer.cli.cp`, :mod:`~fastxfer.cli.ls`,
:mod:`~fastxfer.cli.restore` (restore, restore-status), :mod:`~fastxfer.cli.admin`
(abort-uploads, bench), :mod:`~fastxfer.cli.serve` (serve, demo); what they share
is in :mod:`~fastxfer.cli.common`.

Exit codes (also in README):
  0 success; 1 transfer failed; 2 bad usage or value; 3 local file problem
  (missing, unreadable, disk full); 4 S3 refused (no such bucket/key, access
  denied); 5 bad or missing credentials; 6 endpoint unreachable; 7 object in
  cold storage; 8 integrity check failed; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fastxfer.cli import admin, cp, ls, restore, serve
from fastxfer.cli.common import EXIT_CODES_HELP, Handler, Parser, report_error, report_interrupted
from fastxfer.errors import FastxferError
from fastxfer.version import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="fastxfer",
        description="Fast, safe S3 transfers for backups.",
        epilog=EXIT_CODES_HELP,
    )
    p.add_argument("--version", action="version", version=f"fastxfer {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in (cp, ls, restore, admin, serve):
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastxfer ARGS`` (``sys.argv[1:]`` when ``argv`` is None); return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        return admin.bench(args_list[1:])  # whatever follows is the suite's, not ours
    args = build_parser().parse_args(args_list)
    from fastxfer.runtime import tune_process

    tune_process()
    handler: Handler = args.handler
    try:
        return handler(args)
    except FastxferError as exc:
        return report_error(exc)
    except KeyboardInterrupt:
        return report_interrupted()
