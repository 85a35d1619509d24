"""What every ``fastxfer`` command shares: the parser, the connection options,
the one place a TransferConfig is built from flags, errors and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, Protocol, TypeVar

from fastxfer.config import TransferConfig
from fastxfer.errors import FastxferError, UsageError
from fastxfer.units import parse_count, parse_rate, parse_size

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failed, 2 usage, 3 local file, 4 S3 refused, "
    "5 credentials, 6 unreachable, 7 cold object, 8 integrity, 130 interrupted."
)

Handler = Callable[[argparse.Namespace], int]
"""What a command runs: parsed arguments in, exit code out."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one clear line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"fastxfer: error: {message}\n")


Subparsers = argparse._SubParsersAction
"""What ``add_subparsers()`` returns (argparse has no public name for it)."""


class ArgumentContainer(Protocol):
    """A parser or an argument group."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action: ...


def add_command(sub: Subparsers[Parser], name: str, handler: Handler, **kwargs: Any) -> Parser:
    """Add subcommand ``name`` that runs ``handler``."""
    p = sub.add_parser(name, **kwargs)
    p.set_defaults(handler=handler)
    return p


def add_connection_options(p: argparse.ArgumentParser) -> None:
    """--endpoint-url, --profile, --region, --no-verify-ssl: every command that talks to S3.

    Defaults are None so :func:`config_from_args` can tell a flag given from one
    left out (the environment then decides, see ``TransferConfig.from_env``).
    """
    g = p.add_argument_group("connection")
    g.add_argument(
        "--endpoint-url",
        default=None,
        help="S3 endpoint (default: AWS; env AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)",
    )
    g.add_argument("--profile", default=None, help="AWS profile name (env AWS_PROFILE)")
    g.add_argument("--region", default=None, help="region (default: profile's, else us-east-1)")
    g.add_argument("--no-verify-ssl", action="store_true", help="do not verify TLS certificates")


def add_concurrency_option(p: ArgumentContainer) -> None:
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight (default 32; env FASTXFER_CONCURRENCY)",
    )


def add_transfer_options(p: argparse.ArgumentParser) -> None:
    """Sizes, limits, storage class and integrity: the commands that move data."""
    g = p.add_argument_group("transfer (defaults from FASTXFER_* variables, see README)")
    add_concurrency_option(g)
    g.add_argument("--part-size", default=None, help="multipart part size (default 16MiB)")
    g.add_argument(
        "--multipart-threshold", default=None, help="multipart at/above this size (16MiB)"
    )
    g.add_argument("--memory-limit", default=None, help="bound on part buffers in memory (512MiB)")
    g.add_argument("--storage-class", default=None, help="storage class for uploads")
    g.add_argument(
        "--storage-class-rule",
        action="append",
        default=[],
        metavar="PATTERN=CLASS",
        help="storage class by key glob or prefix/ (first match wins; repeatable)",
    )
    g.add_argument("--bwlimit", default=None, help="cap on bytes/s, both directions (4MiB/s)")
    g.add_argument("--bwlimit-up", default=None, help="cap on upload bytes/s")
    g.add_argument("--bwlimit-down", default=None, help="cap on download bytes/s")
    g.add_argument(
        "--bwlimit-per-connection", default=None, help="cap on bytes/s of each connection"
    )
    g.add_argument(
        "--bwlimit-schedule",
        default=None,
        help='weekly timetable, e.g. "Mon-Fri 08:00-18:00 4MiB/s, otherwise off"',
    )
    g.add_argument("--tps", default=None, help="cap on requests per second")
    g.add_argument(
        "--checksum",
        default=None,
        choices=["auto", "server", "client", "md5", "off"],
        help="integrity mode (see README; default auto)",
    )


def add_output_options(p: argparse.ArgumentParser, *, progress: bool = False) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print JSON on stdout")
    if progress:
        g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("-q", "--quiet", action="store_true", help="print errors only")


# -- the one place a config is built from flags -----------------------------------


def _concurrency(value: int, flag: str) -> int:
    if value < 1:
        raise UsageError(f"{flag} must be at least 1, got {value}")
    return value


def _text(value: str, flag: str) -> str:
    return value


_FLAGS: tuple[tuple[str, str, Callable[[Any, str], object]], ...] = (
    # (argparse dest, TransferConfig field, parser(value, flag name))
    ("endpoint_url", "endpoint_url", _text),
    ("profile", "profile", _text),
    ("region", "region", _text),
    ("concurrency", "max_concurrency", _concurrency),
    ("part_size", "part_size", lambda v, flag: parse_size(v, what=flag)),
    ("multipart_threshold", "multipart_threshold", lambda v, flag: parse_size(v, what=flag)),
    ("memory_limit", "memory_limit", lambda v, flag: parse_size(v, what=flag)),
    ("storage_class", "storage_class", _text),
    ("checksum", "checksum", _text),
    ("bwlimit", "bwlimit", lambda v, flag: parse_rate(v, what=flag)),
    ("bwlimit_up", "bwlimit_up", lambda v, flag: parse_rate(v, what=flag)),
    ("bwlimit_down", "bwlimit_down", lambda v, flag: parse_rate(v, what=flag)),
    ("bwlimit_per_connection", "bwlimit_per_connection", lambda v, flag: parse_rate(v, what=flag)),
    ("bwlimit_schedule", "bwlimit_schedule", _text),
    ("tps", "tps", lambda v, flag: parse_count(v, what=flag)),
)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """TransferConfig fields for the flags the user actually gave (parsed, named on error)."""
    given = vars(args)
    out: dict[str, Any] = {}
    for dest, name, parse in _FLAGS:
        value = given.get(dest)
        if value is not None:
            out[name] = parse(value, "--" + dest.replace("_", "-"))
    if given.get("no_verify_ssl"):
        out["verify_tls"] = False
    return out


def config_from_args(args: argparse.Namespace) -> TransferConfig:
    """Flags > environment (``FASTXFER_*``, ``AWS_ENDPOINT_URL``...) > defaults."""
    return TransferConfig.from_env(**flag_overrides(args))


# -- running and errors --------------------------------------------------------------


def run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run on uvloop when available (lower CPU per request than the default loop)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(coro)
    return uvloop.run(coro)


def warn(message: str) -> None:
    print(f"fastxfer: {message}", file=sys.stderr)


def report_error(exc: FastxferError) -> int:
    """Print ``exc`` as the one line a failed command shows; return its exit code."""
    print(f"fastxfer: error: {exc}", file=sys.stderr)
    return exc.exit_code


def report_interrupted(hint: str = "") -> int:
    print(f"fastxfer: interrupted{'; ' + hint if hint else ''}", file=sys.stderr)
    return EXIT_INTERRUPTED
