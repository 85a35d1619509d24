"""Signals against a real ``fastxfer`` process: SIGTERM and SIGHUP clean up as Ctrl-C does.

Each signal is sent at a point read from the server (ListParts shows a stored
part of the upload) or from the disk (the download's temp file exists), never
after a sleep.  The transfers are slowed with ``--bwlimit`` so they are surely
still running when that point is seen, however loaded the machine is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server

DEADLINE = 120.0
"""Seconds a test waits for the point at which it signals (then it fails)."""


def cli_env(srv: LocalS3Server, state_dir: str, **extra: str) -> dict[str, str]:
    """The environment of a ``fastxfer`` process on ``srv``, isolated from the user's files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTXFER_"))}
    env.update(
        AWS_ACCESS_KEY_ID=srv.access_key,
        AWS_SECRET_ACCESS_KEY=srv.secret_key,
        AWS_ENDPOINT_URL=srv.endpoint_url,
        AWS_CONFIG_FILE=os.path.join(state_dir, "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(state_dir, "aws-credentials"),
        FASTXFER_STATE=os.path.join(state_dir, "state.sqlite"),
    )
    env.update(extra)
    return env


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fastxfer.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_until(what: str, proc: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    """Poll ``ready`` until it is true; fail if the process ends first or after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not ready():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"fastxfer exited ({proc.returncode}) before {what}: {err}{out}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail(f"no {what} within {DEADLINE:.0f} s")
        time.sleep(0.05)


def incomplete_uploads(s3: Any, bucket: str) -> list[Any]:
    """The bucket's incomplete multipart uploads (rclone answers NoSuchUpload for none yet)."""
    try:
        uploads: list[Any] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
        return []
    return uploads


def stored_parts(s3: Any, bucket: str) -> int:
    """Parts the server holds for the bucket's incomplete multipart uploads."""
    total = 0
    for u in incomplete_uploads(s3, bucket):
        try:
            parts = s3.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        except ClientError:
            continue  # completed or aborted meanwhile
        total += len(parts.get("Parts", []))
    return total


def make_file(path: str, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


@pytest.fixture
def big_file(work_dir: str) -> str:
    path = os.path.join(work_dir, "big.bin")
    make_file(path, 48 * MiB)
    return path


def interrupt_upload(
    srv: LocalS3Server,
    s3: Any,
    bucket: str,
    src: str,
    state_dir: str,
    signals: tuple[int, ...],
) -> subprocess.CompletedProcess[str]:
    """Start ``fastxfer cp SRC s3://BUCKET/big.bin`` (48 MiB at 4 MiB/s: 12 s at least),
    send ``signals`` once the server holds a part of it, return how it ended.

    One request at a time, so the first 5 MiB part is stored after ~1.3 s with
    more than 10 s of the upload still to go (parts sent side by side would
    share the cap and all end near the end).
    """
    env = cli_env(srv, state_dir)
    proc = start_cli(
        env,
        "cp",
        src,
        f"s3://{bucket}/big.bin",
        "--part-size",
        "5MiB",
        "--bwlimit",
        "4MiB",
        "--concurrency",
        "1",
    )
    wait_until("a stored part", proc, lambda: stored_parts(s3, bucket) > 0)
    for sig in signals:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_signal_mid_upload_aborts_it(
    rclone_server: LocalS3Server,
    s3: Any,
    bucket: str,
    big_file: str,
    work_dir: str,
    sig: signal.Signals,
    code: int,
) -> None:
    r = interrupt_upload(rclone_server, s3, bucket, big_file, work_dir, (sig,))
    assert r.returncode == code, r.stderr
    assert r.stderr.splitlines() == [f"fastxfer: interrupted ({sig.name})"]
    assert incomplete_uploads(s3, bucket) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


class AbortGate:
    """A TCP proxy to a server that holds back any DELETE request (AbortMultipartUpload)
    until :meth:`open`: it makes a cleanup last as long as a test needs, and says
    when the cleanup has begun (``delete_seen``), as read on the wire."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.delete_seen = threading.Event()
        self.opened = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        tail = b""
        try:
            while data := src.recv(1 << 16):
                if upstream and not self.opened.is_set() and b"DELETE /" in tail + data:
                    self.delete_seen.set()
                    self.opened.wait(DEADLINE)
                dst.sendall(data)
                tail = data[-7:]
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.set()
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


def test_second_ctrl_c_during_cleanup_does_not_cut_it_short(
    rclone_server: LocalS3Server, s3: Any, bucket: str, big_file: str, work_dir: str
) -> None:
    """Ctrl-C twice, the second while the multipart upload is being aborted: the
    abort still completes, no "cleanup did not finish within 30 s" (which the
    second Ctrl-C used to print at once), exit 130."""
    gate = AbortGate(int(rclone_server.endpoint_url.rsplit(":", 1)[1]))
    env = cli_env(rclone_server, work_dir, AWS_ENDPOINT_URL=gate.endpoint_url)
    args = [big_file, f"s3://{bucket}/big.bin", "--part-size", "5MiB", "--bwlimit", "4MiB"]
    proc = start_cli(env, "cp", *args, "--concurrency", "1")
    stderr = proc.stderr
    assert stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")))
    reader.start()
    try:
        wait_until("a stored part", proc, lambda: stored_parts(s3, bucket) > 0)
        proc.send_signal(signal.SIGINT)
        wait_until("the abort request", proc, gate.delete_seen.is_set)
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + DEADLINE
        while not lines and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # the "still cleaning up" line, or the process gone
        gate.open()
        proc.wait(DEADLINE)
    finally:
        gate.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(DEADLINE)
        proc.stdout.close()  # type: ignore[union-attr]
        stderr.close()
    assert proc.returncode == 130, lines
    assert lines == [
        "fastxfer: still cleaning up (aborting unfinished uploads, removing partial files)\n",
        "fastxfer: interrupted (SIGINT)\n",
    ]
    assert incomplete_uploads(s3, bucket) == []


def test_sigterm_mid_download_removes_the_temp_file(
    rclone_server: LocalS3Server, s3: Any, bucket: str, big_file: str, work_dir: str
) -> None:
    s3.upload_file(big_file, bucket, "big.bin")
    out = os.path.join(work_dir, "out")
    os.mkdir(out)
    proc = start_cli(
        cli_env(rclone_server, work_dir), "cp", f"s3://{bucket}/big.bin", out, "--bwlimit", "4MiB"
    )

    def temp_file_written() -> bool:
        for name in os.listdir(out):
            try:
                if name.startswith(".big.bin.fastxfer-") and os.stat(f"{out}/{name}").st_size:
                    return True
            except FileNotFoundError:
                pass
        return False

    wait_until("the download's temp file", proc, temp_file_written)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 143, err
    assert err.splitlines() == ["fastxfer: interrupted (SIGTERM)"]
    assert os.listdir(out) == []
