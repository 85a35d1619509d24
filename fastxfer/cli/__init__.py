"""The ``fastxfer`` command line.

One module per command group: :mod:`~fastxfer.cli.cp` (with
:mod:`~fastxfer.cli.stdio` for ``-``), :mod:`~fastxfer.cli.sync`,
:mod:`~fastxfer.cli.ls`, :mod:`~fastxfer.cli.rm` (rm, mv),
:mod:`~fastxfer.cli.restore` (restore, restore-status), :mod:`~fastxfer.cli.admin`
(abort-uploads, bench), :mod:`~fastxfer.cli.serve` (serve, demo); what they share
is in :mod:`~fastxfer.cli.common`, the bar in :mod:`~fastxfer.cli.progress`, the
``-v`` logs in :mod:`~fastxfer.cli.logs`.

Exit codes (also in README):
  0 success; 1 a transfer failed or the result is incomplete (keys or files
  that could not be copied); 2 bad usage or value; 3 local file problem
  (missing, unreadable, disk full); 4 S3 refused (no such bucket/key, access
  denied); 5 bad or missing credentials; 6 endpoint unreachable; 7 object in
  cold storage; 8 integrity check failed; 128+N stopped by signal N after
  cleaning up (130 SIGINT / Ctrl-C, 129 SIGHUP, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from fastxfer.cli import admin, archive, cp, ls, restore, rm, serve, sync
from fastxfer.cli.common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    CommandLineError,
    Handler,
    Interrupted,
    JsonErrors,
    Parser,
    report_error,
    report_interrupted,
    report_unexpected,
)
from fastxfer.cli.logs import configure_logging
from fastxfer.errors import FastxferError, translate
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
    for module in (cp, sync, ls, rm, restore, archive, admin, serve):
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastxfer ARGS`` (``sys.argv[1:]`` when ``argv`` is None); return the exit code.

    Every failure is one line on stderr and an exit code (README "exit codes");
    with ``--json`` also a JSON object ``{"error": ..., "exit": N}`` on stdout
    (stderr when stdout carries data: ``cp s3://b/k -``).
    ``FASTXFER_DEBUG=1`` lets an unexpected error show its traceback.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["bench"]:
        return admin.bench(args_list[1:])  # whatever follows is the suite's, not ours
    try:
        args = build_parser().parse_args(args_list)
    except CommandLineError as exc:
        # Before parsing succeeded only the raw words tell whether JSON was asked for.
        as_json = "--json" in args_list and "--" not in args_list[: args_list.index("--json")]
        to_stderr = args_list[:1] == ["cp"] and args_list[2:3] == ["-"]
        return report_error(exc, JsonErrors(as_json, to_stderr=to_stderr))
    from fastxfer.runtime import tune_process

    tune_process()
    configure_logging(args)
    handler: Handler = args.handler
    errors = JsonErrors.from_args(args)
    try:
        return handler(args)
    except Interrupted as exc:
        return report_interrupted(exc, json=errors)
    except FastxferError as exc:
        return report_error(exc, errors)
    except KeyboardInterrupt:
        return report_interrupted(json=errors)
    except BrokenPipeError:
        # stdout closed by its reader (`fastxfer ls -r ... | head`): stop quietly, and
        # keep the interpreter from failing again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:
        return report_error(translate(exc), errors)
    except Exception as exc:
        if os.environ.get("FASTXFER_DEBUG"):
            raise
        return report_unexpected(exc, errors)
