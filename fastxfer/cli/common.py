"""What every ``fastxfer`` command shares: the parser, the connection options,
the one place a TransferConfig is built from flags, errors and exit codes."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
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
    "Exit codes: 0 ok, 1 failed or incomplete, 2 usage, 3 local file, 4 S3 refused, "
    "5 credentials, 6 unreachable, 7 cold object, 8 integrity, 128+N stopped by signal N "
    "(130 Ctrl-C, 143 SIGTERM, 129 SIGHUP; transfers are cleaned up first)."
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
    g.add_argument(
        "--ca-bundle",
        default=None,
        metavar="FILE",
        help="trust the CAs in this PEM file (env AWS_CA_BUNDLE)",
    )
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
        help="storage class by glob or prefix/ (first match wins; repeatable). Rules see "
        "the key relative to the destination: with DST s3://b/b1/, 'meta/=STANDARD' "
        "matches b1/meta/... and '*.manifest=STANDARD' any .manifest file",
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
        if given.get("ca_bundle"):
            raise UsageError("give --ca-bundle or --no-verify-ssl, not both")
        out["verify_tls"] = False
    elif given.get("ca_bundle"):
        bundle = given["ca_bundle"]
        if not os.path.isfile(bundle):
            raise UsageError(f"--ca-bundle: {bundle}: no such file")
        out["verify_tls"] = bundle
    return out


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


def report_error(exc: FastxferError) -> int:
    """Print ``exc`` as the one line a failed command shows; return its exit code."""
    print(f"fastxfer: error: {one_line(str(exc))}", file=sys.stderr)
    return exc.exit_code


def report_interrupted(exc: Interrupted | None = None, hint: str = "") -> int:
    """The one line of a command stopped by a signal; its exit code (130 for Ctrl-C)."""
    what = f" ({exc.name})" if exc is not None else ""
    print(f"fastxfer: interrupted{what}{'; ' + hint if hint else ''}", file=sys.stderr)
    return exc.exit_code if exc is not None else EXIT_INTERRUPTED


def report_unexpected(exc: Exception) -> int:
    """An error fastxfer did not foresee: one line (the type and message), exit 1."""
    print(
        f"fastxfer: error: unexpected {type(exc).__name__}: {one_line(str(exc))} "
        "(please report it; FASTXFER_DEBUG=1 shows the traceback)",
        file=sys.stderr,
    )
    return EXIT_FAILED
