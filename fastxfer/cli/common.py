"""What every ``fastxfer`` command shares: the parser, the connection options,
the one place a TransferConfig is built from flags, errors and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from fastxfer.config import TransferConfig, is_timetable
from fastxfer.errors import FastxferError, InvalidConfig, UsageError
from fastxfer.objectinfo import ObjectOptions
from fastxfer.units import parse_count, parse_rate, parse_size

if TYPE_CHECKING:
    from fastxfer.filters import Filters

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failed or incomplete, 2 usage, 3 local file, 4 S3 refused, "
    "5 credentials, 6 unreachable, 7 cold object, 8 integrity, 128+N stopped by signal N "
    "(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; transfers are cleaned up first)."
)

Handler = Callable[[argparse.Namespace], int]
"""What a command runs: parsed arguments in, exit code out."""


class CommandLineError(UsageError):
    """The command line does not parse (unknown option, missing argument...)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one clear line and exit 2.

    It raises :class:`CommandLineError`; :func:`fastxfer.cli.main` prints it
    (as a JSON error object too with ``--json``) and exits 2.
    """

    def error(self, message: str) -> NoReturn:
        raise CommandLineError(message)


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
    g.add_argument(
        "--ca-bundle",
        default=None,
        metavar="FILE",
        help="trust the CAs in this PEM file (env AWS_CA_BUNDLE)",
    )
    g.add_argument("--no-verify-ssl", action="store_true", help="do not verify TLS certificates")
    add_log_options(g)


def add_concurrency_option(p: ArgumentContainer) -> None:
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="requests in flight, kept as given (default: up to 64, tuned from the "
        "measured throughput; env FASTXFER_CONCURRENCY)",
    )


SIZE_UNITS = "bare K/M/G/T and KiB/MiB/GiB are binary (8M = 8 MiB), KB/MB/GB decimal"
"""What a size flag's --help says about its units (see fastxfer.units)."""

RATE_UNITS = (
    "bytes/s; bare K/M/G binary (8M = 8 MiB/s), KB/MB decimal, a bare number is B/s, "
    "bits as 64Mbit/s; off = unlimited"
)
"""What a rate flag's --help says about its units."""


def add_transfer_options(
    p: argparse.ArgumentParser,
    *,
    integrity_flags: Sequence[str] = ("--checksum", "--integrity"),
    rules: bool = True,
) -> None:
    """Sizes, limits, storage class and integrity: the commands that move data.

    ``integrity_flags``: the flags naming the integrity mode (``sync`` keeps
    ``--checksum`` for its comparison, as rclone does, and takes ``--integrity``).
    ``rules``: offer ``--storage-class-rule``.
    """
    g = p.add_argument_group("transfer (defaults from FASTXFER_* variables, see README)")
    add_concurrency_option(g)
    g.add_argument(
        "--part-size",
        default=None,
        help=(
            "multipart part size (16MiB; smaller to keep connections busy, "
            f"larger past 10,000 parts; {SIZE_UNITS})"
        ),
    )
    g.add_argument(
        "--multipart-threshold",
        default=None,
        help="multipart at/above this size (16MiB; same units as --part-size)",
    )
    g.add_argument(
        "--memory-limit",
        default=None,
        help="bound on part buffers in memory (512MiB; same units as --part-size)",
    )
    g.add_argument("--storage-class", default=None, help="storage class for uploads")
    if rules:
        g.add_argument(
            "--storage-class-rule",
            action="append",
            default=[],
            metavar="PATTERN=CLASS",
            help="storage class by glob or prefix/ (first match wins; repeatable). Rules see "
            "the key relative to the destination: with DST s3://b/b1/, 'meta/=STANDARD' "
            "matches b1/meta/... and '*.manifest=STANDARD' any .manifest file",
        )
    g.add_argument(
        "--bwlimit",
        default=None,
        help=f"cap on bytes/s, both directions, e.g. 8M or 4MiB/s ({RATE_UNITS}); or a "
        'timetable, as for --bwlimit-schedule: "08:00,512K 12:00,10M 23:00,off"',
    )
    g.add_argument("--bwlimit-up", default=None, help="cap on upload bytes/s (units as --bwlimit)")
    g.add_argument(
        "--bwlimit-down", default=None, help="cap on download bytes/s (units as --bwlimit)"
    )
    g.add_argument(
        "--bwlimit-per-connection",
        default=None,
        help="cap on bytes/s of each connection (units as --bwlimit)",
    )
    g.add_argument(
        "--bwlimit-schedule",
        default=None,
        help='timetable, weekly "Mon-Fri 08:00-18:00 4MiB/s, otherwise off" or rclone\'s '
        '"08:00,512K 12:00,10M 23:00,off" (rates as --bwlimit)',
    )
    g.add_argument("--tps", default=None, help="cap on requests per second")
    g.add_argument(
        *integrity_flags,
        dest="checksum",
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


def add_filter_options(p: argparse.ArgumentParser) -> None:
    """--include / --exclude / --exclude-from, kept in command-line order (first match wins)."""
    g = p.add_argument_group(
        "filters (rclone's order: the first pattern that matches a path decides; "
        "with --include only, everything else is excluded)"
    )
    for flag, metavar, what in (
        ("--include", "PATTERN", "copy paths that match (glob; repeatable)"),
        ("--exclude", "PATTERN", "skip paths that match (glob; repeatable)"),
        ("--exclude-from", "FILE", "exclude the patterns in FILE, one a line (# comments)"),
    ):
        g.add_argument(
            flag, dest="filters", action=_FilterAction, const=flag, metavar=metavar, help=what
        )


class _FilterAction(argparse.Action):
    """Appends ``(flag, value)`` to one list, so the order of the command line is kept."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        items = list(getattr(namespace, self.dest, None) or [])
        items += [str(self.const), str(values)]
        setattr(namespace, self.dest, items)


def filters_from_args(args: argparse.Namespace) -> Filters:
    """The Filters given on the command line (bad patterns raise InvalidConfig, exit 2)."""
    from fastxfer.filters import Filters

    return Filters.parse(getattr(args, "filters", None) or [])


def add_object_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("object settings (uploads)")
    g.add_argument(
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="user metadata (x-amz-meta-KEY) on every uploaded object; repeatable",
    )
    g.add_argument(
        "--content-type",
        default=None,
        metavar="TYPE",
        help="Content-Type of uploads (default: guessed from the file name, as aws does)",
    )
    g.add_argument(
        "--sse",
        default=None,
        choices=["AES256", "aws:kms"],
        help="server-side encryption of uploads",
    )
    g.add_argument(
        "--sse-kms-key-id", default=None, metavar="KEY", help="KMS key for --sse aws:kms"
    )


_META_KEY = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


def object_options_from_args(args: argparse.Namespace) -> ObjectOptions:
    """Checked before any request: KEY=VALUE pairs, ASCII values, a KMS key only with aws:kms."""
    metadata: dict[str, str] = {}
    for item in getattr(args, "metadata", None) or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--metadata {item!r}: expected KEY=VALUE", hint="e.g. owner=backup")
        if not _META_KEY.match(key):
            raise UsageError(
                f"--metadata {item!r}: {key!r} cannot be a metadata name",
                hint="use letters, digits and - _ . (it becomes the header x-amz-meta-NAME)",
            )
        if not value.isascii() or not value.isprintable():
            raise UsageError(
                f"--metadata {item!r}: S3 metadata values are printable US-ASCII",
                hint="encode the value (e.g. URL-encode it)",
            )
        if key.lower() in (k.lower() for k in metadata):
            raise UsageError(f"--metadata: {key!r} given twice")
        metadata[key] = value
    sse = getattr(args, "sse", None)
    kms = getattr(args, "sse_kms_key_id", None)
    if kms and sse != "aws:kms":
        raise UsageError("--sse-kms-key-id needs --sse aws:kms")
    return ObjectOptions(metadata, getattr(args, "content_type", None), sse, kms)


def add_log_options(p: ArgumentContainer) -> None:
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log every request on stderr (-vv: all botocore debug); secrets are redacted",
    )
    p.add_argument(
        "--log-level",
        default=None,
        type=str.lower,
        choices=["debug", "info", "warning", "error"],
        help="log level of fastxfer and botocore (debug = -vv, info = -v)",
    )


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
    if given.get("bwlimit") is not None:
        field, value = _bwlimit(given["bwlimit"])
        if field in out:
            raise UsageError("give a timetable in --bwlimit or in --bwlimit-schedule, not both")
        out[field] = value
    if given.get("no_verify_ssl"):
        if given.get("ca_bundle"):
            raise UsageError("give --ca-bundle or --no-verify-ssl, not both")
        out["verify_tls"] = False
    elif given.get("ca_bundle"):
        bundle = given["ca_bundle"]
        if not os.path.isfile(bundle):
            raise UsageError(f"--ca-bundle: {bundle}: no such file")
        out["verify_tls"] = bundle
    return out


def _bwlimit(value: str) -> tuple[str, Any]:
    """``--bwlimit``: a rate (``8M``), or a timetable as rclone takes it there
    (``"08:00,512K 12:00,10M 23:00,off"``, or the weekly form)."""
    if not is_timetable(value):
        return "bwlimit", parse_rate(value, what="--bwlimit")
    from fastxfer.bandwidth import Schedule

    try:
        Schedule.parse(value)
    except InvalidConfig as exc:
        raise InvalidConfig(f"--bwlimit: {exc.message}", hint=exc.hint) from None
    return "bwlimit_schedule", value


def config_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> TransferConfig:
    """Flags > environment (``FASTXFER_*``, ``AWS_ENDPOINT_URL``...) > defaults.

    The endpoint URL and the profile are checked here, before any connection,
    naming the flag or the variable they came from.
    """
    env = os.environ if environ is None else environ
    overrides = flag_overrides(args)
    endpoint = overrides.get("endpoint_url") or next(
        (env[v] for v in _ENV_SOURCES["endpoint_url"] if env.get(v, "").strip()), None
    )
    if endpoint is not None:
        # Before the config (which refuses it too), to name the flag or variable.
        check_endpoint_url(endpoint.strip(), _source("endpoint_url", overrides, env))
    cfg = TransferConfig.from_env(env, **overrides)
    if cfg.profile:
        check_profile(cfg.profile, _source("profile", overrides, env), env)
    return cfg


_ENV_SOURCES: dict[str, tuple[str, ...]] = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "profile": ("AWS_PROFILE",),
}


def _source(field: str, overrides: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The flag or the environment variable a config field came from."""
    if field in overrides:
        return "--" + field.replace("_", "-")
    return next((v for v in _ENV_SOURCES[field] if env.get(v)), _ENV_SOURCES[field][0])


def check_endpoint_url(url: str, source: str = "--endpoint-url") -> None:
    """Raise UsageError unless ``url`` is an ``http://`` or ``https://`` URL with a host."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number, an unbalanced [
        parts, port_ok = None, False
    if (
        parts is None
        or not port_ok
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in url)
    ):
        raise UsageError(
            f"{source}: {shorten(url)!r} is not an endpoint URL",
            hint="write it as http://HOST:PORT or https://HOST",
        )


def check_profile(
    name: str, source: str = "--profile", env: Mapping[str, str] | None = None
) -> None:
    """Raise UsageError unless profile ``name`` is in the AWS config or credentials file."""
    import botocore.session

    try:
        known = botocore.session.Session(profile=None).available_profiles
    except Exception as exc:  # a config file botocore cannot parse
        raise UsageError(f"cannot read the AWS config files: {exc}") from exc
    if name not in known:
        environ = os.environ if env is None else env
        files = (
            environ.get("AWS_CONFIG_FILE") or "~/.aws/config",
            environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
        )
        raise UsageError(
            f"{source}: no profile {name!r} in {files[0]} or {files[1]}",
            hint="check the name (`aws configure list-profiles`)",
        )


MAX_KEY_BYTES = 1024
"""S3's limit on the length of a key (UTF-8 bytes)."""


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an S3 key (not UTF-8, longer than 1,024 bytes), or None."""
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "the name is not valid UTF-8, which S3 keys must be"
    if size > MAX_KEY_BYTES:
        return f"the key is {size:,} bytes long; S3 allows at most {MAX_KEY_BYTES:,}"
    return None


def shorten(text: str, limit: int = 60) -> str:
    """``text`` cut to about ``limit`` characters (the middle elided), safe to print."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return f"{text[:half]}…{text[-half:]}"


# -- running and errors --------------------------------------------------------------

HANDLED_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""Signals that stop a command the way Ctrl-C does: transfers are cancelled (multipart
uploads aborted, partial downloads removed), then the process exits 128 + the signal."""


class Interrupted(Exception):
    """A signal stopped the command; raised by :func:`run_async` once cleanup is done."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(self.name)

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Signals:
    """Signal handling for one :func:`run_async` call (installed on its loop, removed after).

    The first signal cancels the command's task: the same path as Ctrl-C, so
    every transfer cleans up (bounded by the config's ``abort_timeout``).  A
    later one does not cancel again, which would cut that cleanup short; it
    only says, once, that cleanup is running.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._told = False

    def install(self, task: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        for sig in HANDLED_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, int(sig), task)

    def remove(self) -> None:
        """Take the handlers off the loop.

        After a signal the process is on its way out: the signals are then
        ignored (not restored), so a second Ctrl-C arriving after cleanup
        cannot turn exit 130 into a KeyboardInterrupt at shutdown.  They are
        blocked during the swap so none slips in between.
        """
        loop = asyncio.get_running_loop()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            for sig in HANDLED_SIGNALS:
                loop.remove_signal_handler(sig)
                if self.received is not None:
                    signal.signal(sig, signal.SIG_IGN)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _on_signal(self, signum: int, task: asyncio.Task[Any]) -> None:
        if self.received is None:
            self.received = signum
            task.cancel()
        elif not self._told:
            self._told = True
            warn("still cleaning up (aborting unfinished uploads, removing partial files)")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` on a new loop (uvloop when available: less CPU per request).

    SIGINT, SIGTERM and SIGHUP cancel it (see :class:`_Signals`); once it has
    unwound, :class:`Interrupted` is raised with the first signal.
    """
    signals = _Signals()

    async def guarded() -> _T:
        task = asyncio.current_task()
        assert task is not None
        signals.install(task)
        try:
            return await coro
        finally:
            signals.remove()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            return runner.run(guarded())
        except (Exception, asyncio.CancelledError) as exc:
            if signals.received is None:
                raise
            raise Interrupted(signals.received) from exc


def one_line(text: str) -> str:
    """``text`` on one line (botocore and OS messages can hold newlines)."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def warn(message: str) -> None:
    print(f"fastxfer: {one_line(message)}", file=sys.stderr)


@dataclass(frozen=True, slots=True)
class JsonErrors:
    """Whether a failure is also printed as ``{"error": ..., "exit": N}`` (``--json``),
    and where: stdout, or stderr when stdout carries data (``cp s3://b/k -``)."""

    enabled: bool = False
    to_stderr: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> JsonErrors:
        return cls(bool(getattr(args, "json", False)), getattr(args, "dst", None) == "-")

    def emit(self, message: str, exit_code: int, **extra: Any) -> None:
        if self.enabled:
            import json

            record = {"error": message, "exit": exit_code, **extra}
            print(json.dumps(record), file=sys.stderr if self.to_stderr else sys.stdout)


def report_error(exc: FastxferError, json: JsonErrors | None = None) -> int:
    """Print ``exc`` as the one line a failed command shows; return its exit code."""
    message = one_line(str(exc))
    print(f"fastxfer: error: {message}", file=sys.stderr)
    if json is not None:
        json.emit(message, exc.exit_code, type=type(exc).__name__)
    return exc.exit_code


def report_interrupted(
    exc: Interrupted | None = None, hint: str = "", json: JsonErrors | None = None
) -> int:
    """The one line of a command stopped by a signal; its exit code (130 for Ctrl-C)."""
    what = f" ({exc.name})" if exc is not None else ""
    message = f"interrupted{what}{'; ' + hint if hint else ''}"
    print(f"fastxfer: {message}", file=sys.stderr)
    code = exc.exit_code if exc is not None else EXIT_INTERRUPTED
    if json is not None:
        json.emit(message, code, type="Interrupted")
    return code


def report_unexpected(exc: Exception, json: JsonErrors | None = None) -> int:
    """An error fastxfer did not foresee: one line (the type and message), exit 1."""
    message = f"unexpected {type(exc).__name__}: {one_line(str(exc))}"
    print(
        f"fastxfer: error: {message} (please report it; FASTXFER_DEBUG=1 shows the traceback)",
        file=sys.stderr,
    )
    if json is not None:
        json.emit(message, EXIT_FAILED, type=type(exc).__name__)
    return EXIT_FAILED
