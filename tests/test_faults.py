"""The fault suite (issue #10): a hostile network, a server that throttles or
restarts, a full disk, an object replaced under a download, a killed restore.

Against real servers (rclone serve s3, the realistic moto server) through the
fault proxy (tests/faultproxy.py).  Every wait has a deadline; points in a
transfer are read from its state (bytes done, parts stored, the server's
request counts), never from a clock; time bounds leave the margins a loaded
2-core CI machine needs.  (Stalls, single cuts, kill -9 resume and NoSuchUpload
are in test_engine.py and test_resume.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastxfer import (
    BaseSubscriber,
    DiskFull,
    FastxferError,
    IntegrityError,
    ProgressEvent,
    TransferConfig,
    TransferFailed,
    TransferManager,
)
from fastxfer import localserver as localserver_module
from fastxfer.coldserver import RealisticMotoServer
from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server

from faultproxy import FaultProxy, is_ranged_get, is_upload_part

# Every test here runs on both request paths (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")

# -- helpers ---------------------------------------------------------------------


def write_random(path: str, size: int) -> bytes:
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: str) -> str:
    with open(path, "rb") as f:
        return sha(f.read())


def leftovers(directory: str) -> list[str]:
    """Download temp files (``.NAME.fastxfer-PID-RANDOM.tmp``) left in ``directory``."""
    return [n for n in os.listdir(directory) if ".fastxfer-" in n]


async def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def config_for(endpoint: str, srv: LocalS3Server, state_dir: str, **kw: Any) -> TransferConfig:
    """A config on ``endpoint`` (the server or a proxy in front of it), with the
    upload journal in the test's own directory, not the user's cache."""
    kw.setdefault("state_path", os.path.join(state_dir, "state.sqlite"))
    return TransferConfig(
        endpoint_url=endpoint,
        aws_access_key_id=srv.access_key,
        aws_secret_access_key=srv.secret_key,
        **kw,
    )


class LimitHistory:
    """Every value the connection budget's limit is set to (the pacer's AIMD output)."""

    def __init__(self, tm: TransferManager) -> None:
        budget = tm.session.connections
        self.values = [budget.limit]
        original = budget.set_limit

        def record(limit: int) -> None:
            self.values.append(limit)
            original(limit)

        budget.set_limit = record  # type: ignore[method-assign]


# -- reset storms ----------------------------------------------------------------


async def test_reset_storm_on_upload(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    """Six connections reset mid-part (2 MiB into each): every part still lands once."""
    src = os.path.join(work_dir, "src")
    data = write_random(src, 40 * MiB)
    async with FaultProxy(
        "127.0.0.1", rclone_server.port, cut_request_after=2 * MiB, faults=6
    ) as px:
        cfg = config_for(
            px.endpoint_url, rclone_server, work_dir, max_concurrency=4, part_size=5 * MiB
        )
        async with TransferManager(cfg) as tm:
            st = await asyncio.wait_for(tm.upload(src, bucket, "obj"), timeout=60)
            assert await tm.list_multipart_uploads(bucket) == []
        assert px.cuts == 6
    assert st.bytes_done == len(data)
    assert st.parts_done == 8
    assert sha(s3.get_object(Bucket=bucket, Key="obj")["Body"].read()) == sha(data)


async def test_reset_storm_on_download(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    """Eight connections reset 1 MiB into their answer: each range resumes where it stopped."""
    data = os.urandom(48 * MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    dest = os.path.join(work_dir, "dest")
    async with FaultProxy(
        "127.0.0.1", rclone_server.port, cut_response_after=1 * MiB, faults=8
    ) as px:
        cfg = config_for(
            px.endpoint_url,
            rclone_server,
            work_dir,
            max_concurrency=4,
            download_part_size=8 * MiB,
        )
        async with TransferManager(cfg) as tm:
            st = await asyncio.wait_for(tm.download(bucket, "obj", dest), timeout=60)
        assert px.cuts == 8
    assert st.retries == 8  # one resumed range per reset, nothing failed for good
    assert file_sha(dest) == sha(data)
    assert leftovers(work_dir) == []


# -- truncated bodies (the server closes cleanly mid-body) -------------------------


async def test_truncated_body_of_a_single_get_falls_back_and_completes(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    """The size_hint path (one GET, no HEAD) loses its body after 1 MiB: HEAD, GET again."""
    data = os.urandom(3 * MiB)
    s3.put_object(Bucket=bucket, Key="small", Body=data)
    dest = os.path.join(work_dir, "small")
    async with FaultProxy(
        "127.0.0.1", rclone_server.port, cut_response_after=1 * MiB, cut_with_fin=True
    ) as px:
        cfg = config_for(px.endpoint_url, rclone_server, work_dir, max_concurrency=2)
        async with TransferManager(cfg) as tm:
            st = await asyncio.wait_for(
                tm.download(bucket, "small", dest, size_hint=len(data)), timeout=30
            )
        assert px.cuts == 1
    assert st.retries == 1
    assert st.requests == {"get_object": 2, "head_object": 1}
    assert file_sha(dest) == sha(data)
    assert leftovers(work_dir) == []


async def test_truncated_body_of_a_ranged_get_is_resumed(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    data = os.urandom(40 * MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    dest = os.path.join(work_dir, "dest")
    async with FaultProxy(
        "127.0.0.1",
        rclone_server.port,
        cut_response_after=3 * MiB,
        cut_with_fin=True,
        faults=2,
    ) as px:
        cfg = config_for(
            px.endpoint_url,
            rclone_server,
            work_dir,
            max_concurrency=4,
            download_part_size=8 * MiB,
        )
        async with TransferManager(cfg) as tm:
            st = await asyncio.wait_for(tm.download(bucket, "obj", dest), timeout=30)
        assert px.cuts == 2
    assert st.retries == 2
    # 5 ranges, and one more GET per truncated range (for the rest of it only).
    assert st.requests == {"head_object": 1, "get_object": 5 + 2}
    assert file_sha(dest) == sha(data)
    assert leftovers(work_dir) == []


# -- 503 SlowDown with Retry-After ---------------------------------------------------


async def test_slowdown_on_ranged_gets_halves_the_limit_and_recovers(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    data = os.urandom(50 * MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    dest = os.path.join(work_dir, "dest")
    async with FaultProxy(
        "127.0.0.1", rclone_server.port, slowdown=is_ranged_get, slowdown_count=3
    ) as px:
        cfg = config_for(
            px.endpoint_url,
            rclone_server,
            work_dir,
            max_concurrency=4,
            download_part_size=5 * MiB,
        )
        async with TransferManager(cfg) as tm:
            history = LimitHistory(tm)
            await asyncio.wait_for(tm.download(bucket, "obj", dest), timeout=60)
            pacer = tm.stats().pacer
        assert px.slowdowns == 3
        # botocore sent the throttled ones again (its own retries: the transfer's
        # request counts, st.requests, count calls, 10).
        assert sum(1 for m, t in px.requests if m == "GET") == 10 + 3
    assert pacer.throttles == 3
    assert min(history.values) <= 4 // 2  # halved (twice if the 503s span a cooldown)
    assert pacer.connection_limit == 4  # and climbed back while the GETs succeeded
    assert history.values[-1] == 4
    assert file_sha(dest) == sha(data)


async def test_slowdown_on_upload_part_halves_the_limit_and_recovers(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    data = write_random(src, 40 * MiB)
    async with FaultProxy(
        "127.0.0.1", rclone_server.port, slowdown=is_upload_part, slowdown_count=3
    ) as px:
        cfg = config_for(
            px.endpoint_url, rclone_server, work_dir, max_concurrency=4, part_size=5 * MiB
        )
        async with TransferManager(cfg) as tm:
            history = LimitHistory(tm)
            st = await asyncio.wait_for(tm.upload(src, bucket, "obj"), timeout=60)
            pacer = tm.stats().pacer
            assert await tm.list_multipart_uploads(bucket) == []
        assert px.slowdowns == 3
        assert sum(1 for m, t in px.requests if is_upload_part(m, t, {})) == 8 + 3
    assert pacer.throttles == 3
    assert min(history.values) <= 4 // 2
    assert pacer.connection_limit == 4
    assert history.values[-1] == 4
    assert st.bytes_done == len(data)  # the retried parts' bytes counted once
    assert sha(s3.get_object(Bucket=bucket, Key="obj")["Body"].read()) == sha(data)


# -- the server killed and restarted ------------------------------------------------


def _check_port_free_like_the_server(port: int, host: str = "127.0.0.1") -> None:
    """check_port_free as the server binds (SO_REUSEADDR): a port whose old
    connections wait in TIME_WAIT is free for a new listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


class Restartable:
    """A server of the test's own with a fixed root and port; ``restart()`` kills
    it with SIGKILL and starts a new one on the same root, port and keys."""

    def __init__(self, root: str) -> None:
        self.servers = [LocalS3Server(root=root).start()]
        self.root = root

    @property
    def server(self) -> LocalS3Server:
        return self.servers[-1]

    def restart(self) -> LocalS3Server:
        old = self.server
        assert old.pid is not None
        os.kill(old.pid, signal.SIGKILL)
        old.stop()
        new = LocalS3Server(
            root=self.root, port=old.port, access_key=old.access_key, secret_key=old.secret_key
        )
        self.servers.append(new.start())
        return new

    def stop(self) -> None:
        for srv in self.servers:
            srv.stop()


@pytest.fixture
def restartable(work_dir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Restartable]:
    # localserver.check_port_free binds without SO_REUSEADDR, so right after a
    # restart it calls the port "in use" (TIME_WAIT of the killed server's
    # connections), although rclone itself can listen there.  Reported.
    monkeypatch.setattr(localserver_module, "check_port_free", _check_port_free_like_the_server)
    servers = Restartable(os.path.join(work_dir, "s3root"))
    try:
        yield servers
    finally:
        servers.stop()


async def test_server_killed_and_restarted_mid_download(
    restartable: Restartable, work_dir: str
) -> None:
    srv = restartable.server
    name = srv.make_bucket()
    data = os.urandom(64 * MiB)
    srv.client().put_object(Bucket=name, Key="obj", Body=data)
    dest = os.path.join(work_dir, "dest")
    # Ranges of 24 MiB, two at a time, at 16 MiB/s: when the server dies each
    # open range still has more to come than the socket buffers hold (else it
    # would arrive whole and nothing would be resumed), and the third range
    # starts on a pool whose connections died with the server.
    cfg = config_for(
        srv.endpoint_url,
        srv,
        work_dir,
        max_concurrency=2,
        download_part_size=24 * MiB,
        bwlimit_down=16 * MiB,
    )
    async with TransferManager(cfg) as tm:
        h = tm.download(name, "obj", dest)
        await wait_until(lambda: h.stats().bytes_done >= 12 * MiB, 30, "12 MiB downloaded")
        assert not h.done()
        await asyncio.to_thread(restartable.restart)
        st = await asyncio.wait_for(h, timeout=60)
    assert st.retries >= 1  # a range resumed where its bytes stopped
    assert st.requests["get_object"] > 3
    assert file_sha(dest) == sha(data)
    assert leftovers(work_dir) == []


async def test_server_killed_and_restarted_mid_upload(
    restartable: Restartable, work_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """rclone keeps multipart state in memory: after the restart the upload is
    unknown (NoSuchUpload) and the engine starts it again, once."""
    srv = restartable.server
    name = srv.make_bucket()
    src = os.path.join(work_dir, "src")
    data = write_random(src, 40 * MiB)
    cfg = config_for(
        srv.endpoint_url,
        srv,
        work_dir,
        max_concurrency=2,
        part_size=5 * MiB,
        bwlimit_up=16 * MiB,  # ~2.5 s: the restart lands mid-upload
    )
    async with TransferManager(cfg) as tm:
        h = tm.upload(src, name, "obj")
        await wait_until(lambda: h.stats().parts_done >= 2, 30, "two parts stored")
        assert not h.done()
        new = await asyncio.to_thread(restartable.restart)
        st = await asyncio.wait_for(h, timeout=60)
        assert await tm.list_multipart_uploads(name) == []
    assert st.retries >= 1
    restarts = [r for r in caplog.records if "starting it again" in r.getMessage()]
    assert len(restarts) == 1
    assert st.bytes_done == len(data)
    assert sha(new.client().get_object(Bucket=name, Key="obj")["Body"].read()) == sha(data)


# -- disk full ----------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[str]:
    """A tmpfs of ``size`` mounted on a new directory; skips the test where mounting
    is not permitted (not root, no CAP_SYS_ADMIN, no mount binary)."""
    path = tempfile.mkdtemp(prefix="fx-full-")
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.rmdir(path)
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        os.rmdir(path)
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=10, check=False)
        os.rmdir(path)


@pytest.mark.parametrize("path", ["single-get", "ranged"])
async def test_disk_full_on_download_small_tmpfs(
    make_config: Callable[..., TransferConfig],
    bucket: str,
    s3: Any,
    work_dir: str,
    path: str,
) -> None:
    """An 8 MiB tmpfs half full: the download fails with one DiskFull, and leaves
    neither a partial file nor a temp file (the filler is untouched)."""
    size = 6 * MiB if path == "single-get" else 20 * MiB
    s3.put_object(Bucket=bucket, Key="obj", Body=os.urandom(size))
    cfg = make_config(max_concurrency=4, state_path=os.path.join(work_dir, "state.sqlite"))
    with small_tmpfs("8m") as full:
        with open(os.path.join(full, "filler"), "wb") as f:
            f.write(b"\0" * (4 * MiB))
        dest = os.path.join(full, "obj")
        async with TransferManager(cfg) as tm:
            # single-get: a size from a LIST, one GET that runs out of space while
            # writing; ranged: HEAD, then the space is reserved before any GET.
            hint = size if path == "single-get" else None
            with pytest.raises(DiskFull, match="no space left") as info:
                await asyncio.wait_for(tm.download(bucket, "obj", dest, size_hint=hint), 30)
        assert info.value.exit_code == 3
        assert sorted(os.listdir(full)) == ["filler"]


def _limit_file_size(limit: int) -> Callable[[], None]:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        # Ignored signals stay ignored across exec: a write past the limit then
        # fails with EFBIG instead of killing the process with SIGXFSZ.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return preexec


@pytest.mark.parametrize("size", [6 * MiB, 20 * MiB], ids=["single-get", "ranged"])
def test_file_size_limit_on_download_in_a_subprocess(
    rclone_server: LocalS3Server,
    bucket: str,
    s3: Any,
    size: int,
    request: pytest.FixtureRequest,
) -> None:
    """RLIMIT_FSIZE of 4 MiB (what a quota or a full disk looks like where no tmpfs
    can be mounted): `fastxfer cp` exits 3 with one line, nothing left behind.

    The destination is in the default temp directory: on a disk, a ranged
    download reserves its space first (posix_fallocate fails at once, with the
    path); on tmpfs, and for a single GET, the error comes from a write.
    """
    s3.put_object(Bucket=bucket, Key="obj", Body=os.urandom(size))
    scratch = tempfile.mkdtemp(prefix="fx-fsize-")
    request.addfinalizer(lambda: shutil.rmtree(scratch, ignore_errors=True))
    out = os.path.join(scratch, "out")
    os.mkdir(out)
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=rclone_server.access_key,
        AWS_SECRET_ACCESS_KEY=rclone_server.secret_key,
        FASTXFER_STATE=os.path.join(scratch, "state.sqlite"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(name, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastxfer.cli",
            "cp",
            f"s3://{bucket}/obj",
            os.path.join(out, "obj"),
            "--endpoint-url",
            rclone_server.endpoint_url,
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        timeout=60,
        preexec_fn=_limit_file_size(4 * MiB),
        check=False,
    )
    err = done.stderr.decode(errors="replace").strip()
    assert done.returncode == 3, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert os.listdir(out) == []


def _on_tmpfs(path: str) -> bool:
    """Whether ``path`` is on tmpfs (where downloads check free space instead of
    reserving it with posix_fallocate)."""
    best, fstype = "", ""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return False
    for fields in mounts:
        mnt = fields[1]
        if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype = mnt, fields[2]
    return fstype == "tmpfs"


# -- an object replaced while it is downloaded --------------------------------------


class _ReplaceOnce(BaseSubscriber):
    """Overwrites the object (same size, new bytes) once 6 MiB are in: inside the
    second of the 5 MiB ranges.  Called on the event loop, so the download waits
    for the overwrite: the ranges after it are requested of the new object, on
    a machine however loaded (no race with a clock or a rate)."""

    def __init__(self, s3: Any, bucket: str, size: int) -> None:
        self.s3, self.bucket, self.size = s3, bucket, size
        self.replaced_at: int | None = None

    def on_progress(self, event: ProgressEvent) -> None:
        if self.replaced_at is None and event.bytes_done >= 6 * MiB:
            self.s3.put_object(Bucket=self.bucket, Key="obj", Body=os.urandom(self.size))
            self.replaced_at = event.bytes_done


async def _replace_mid_download(
    tm: TransferManager, s3: Any, bucket: str, dest: str, size: int
) -> None:
    """A ranged download (5 MiB ranges, one at a time) of an object that is
    overwritten when 6 MiB of it are in; let the download finish (or fail)."""
    replacer = _ReplaceOnce(s3, bucket, size)
    try:
        await asyncio.wait_for(tm.download(bucket, "obj", dest, subscribers=[replacer]), 60)
    finally:
        assert replacer.replaced_at is not None
        assert replacer.replaced_at < size - 5 * MiB  # two ranges still to request


async def test_object_replaced_mid_download_on_moto(
    moto_bucket: str, moto_s3: Any, moto_config: Callable[..., TransferConfig], work_dir: str
) -> None:
    """moto honours If-Match: the next range gets 412, the download fails with one
    clear error and keeps nothing."""
    size = 20 * MiB
    moto_s3.put_object(Bucket=moto_bucket, Key="obj", Body=os.urandom(size))
    dest = os.path.join(work_dir, "dest")
    cfg = moto_config(
        max_concurrency=1,
        download_part_size=5 * MiB,
        state_path=os.path.join(work_dir, "state.sqlite"),
    )
    async with TransferManager(cfg) as tm:
        with pytest.raises(TransferFailed, match="changed while it was downloaded"):
            await _replace_mid_download(tm, moto_s3, moto_bucket, dest, size)
    assert not os.path.exists(dest)
    assert leftovers(work_dir) == []


@pytest.mark.parametrize(
    "crc",
    [True, False],
    ids=["with-crc", "no-crc"],
)
async def test_object_replaced_mid_download_on_a_server_ignoring_if_match(
    rclone_server: LocalS3Server,
    bucket: str,
    s3: Any,
    work_dir: str,
    crc: bool,
) -> None:
    """rclone serve s3 ignores If-Match (it answers 200 with the new object's bytes
    and ETag).  The download must still notice: the response's ETag is not the
    one HEAD gave."""
    size = 20 * MiB
    cfg = config_for(
        rclone_server.endpoint_url,
        rclone_server,
        work_dir,
        max_concurrency=1,
        download_part_size=5 * MiB,
    )
    dest = os.path.join(work_dir, "dest")
    async with TransferManager(cfg) as tm:
        if crc:  # uploaded by fastxfer: its CRC64NVME is stored with it
            await tm.upload(os.urandom(size), bucket, "obj")
        else:  # uploaded by another tool: nothing but the size to check
            s3.put_object(Bucket=bucket, Key="obj", Body=os.urandom(size))
        with pytest.raises(FastxferError) as info:
            await _replace_mid_download(tm, s3, bucket, dest, size)
    assert not os.path.exists(dest)
    assert leftovers(work_dir) == []
    if crc:
        # Caught, by the whole-object CRC at the end (the ETag check would say it sooner).
        assert isinstance(info.value, TransferFailed | IntegrityError)
    else:
        assert isinstance(info.value, TransferFailed)
        assert "changed while it was downloaded" in str(info.value)


# -- a restore job killed with SIGKILL ------------------------------------------------


@pytest.fixture
def slow_restores(moto_server: RealisticMotoServer) -> Iterator[RealisticMotoServer]:
    """The session's moto server with restores that take 4 s, put back afterwards."""
    moto_server.set_restore_delay(4.0)
    try:
        yield moto_server
    finally:
        moto_server.set_restore_delay(1.0)


def _poll(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``cond`` (outside an event loop) until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _requested_in_state(state: str) -> int:
    """Objects the state file records as restore-requested (saved after the server said so)."""
    if not os.path.exists(state):
        return 0
    try:
        with contextlib.closing(sqlite3.connect(state, timeout=5)) as db:
            row = db.execute(
                "SELECT COUNT(*) FROM restore_objects WHERE requested_at IS NOT NULL"
            ).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0
    return int(row[0])


def _downloaded_in_state(state: str) -> int:
    """Objects the restore job's state file records as downloaded (0 before it exists)."""
    if not os.path.exists(state):
        return 0
    try:
        with contextlib.closing(sqlite3.connect(state, timeout=5)) as db:
            row = db.execute("SELECT COUNT(*) FROM restore_objects WHERE downloaded = 1").fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0
    return int(row[0])


def test_restore_killed_mid_wait_repeats_no_restore_and_no_get(
    slow_restores: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    """`fastxfer restore --download` is killed with SIGKILL once every RestoreObject
    was sent and the online objects are downloaded (read from the server and the
    job's state), while the archived ones are still thawing.  The same command
    run again sends no RestoreObject and no GET for what was already saved."""
    server = slow_restores
    online = {f"r/online-{i}": os.urandom(64 * 1024) for i in range(3)}
    cold = {f"r/cold-{i}": os.urandom(64 * 1024) for i in range(5)}
    for key, data in online.items():
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=data)
    for key, data in cold.items():
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=data, StorageClass="DEEP_ARCHIVE")
    state = os.path.join(work_dir, "job.sqlite")
    out = os.path.join(work_dir, "out")
    cmd = [
        sys.executable,
        "-m",
        "fastxfer.cli",
        "restore",
        f"s3://{moto_bucket}/r/",
        "--endpoint-url",
        server.endpoint_url,
        "--tier",
        "Bulk",
        "--poll-interval",
        "0.3s",
        "--state",
        state,
        "--download",
        out,
        "--json",
        "-q",
    ]
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(name, None)

    def counts(op: str) -> dict[str, int]:
        return {
            key: c.get(op, 0)
            for (b, key), c in server.counts_by_key().items()
            if b == moto_bucket and key
        }

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        _poll(
            # From the state file, not the server's counts: a RestoreObject the server
            # has answered but the job has not saved yet is sent again (409) by a rerun.
            lambda: (
                _requested_in_state(state) == len(cold)
                and _downloaded_in_state(state) == len(online)
            ),
            30,
            "every RestoreObject sent and the online objects downloaded",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    gets = counts("GetObject")
    assert all(gets.get(k, 0) == 0 for k in cold)  # killed mid-wait: nothing thawed yet
    assert all(gets.get(k, 0) == 1 for k in online)

    done = subprocess.run(cmd, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    assert report["requests"]["RestoreObject"] == 0
    assert report["requests"]["GET"] == len(cold)
    assert report["downloaded"] == len(online) + len(cold)
    assert report["failed"] == 0
    restores = counts("RestoreObject")
    gets = counts("GetObject")
    for key in cold:
        assert restores.get(key) == 1, key
    for key in (*online, *cold):
        assert gets.get(key) == 1, key  # each object read once over both runs
    for key, data in (*online.items(), *cold.items()):
        with open(os.path.join(out, key.removeprefix("r/")), "rb") as f:
            assert f.read() == data, key


def test_restore_killed_mid_download_repeats_only_the_interrupted_get(
    slow_restores: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    """Killed (SIGKILL) while an object is being downloaded (a bandwidth cap makes
    the downloads slow; the kill comes once one is saved and the next has started,
    read from the job's state and the server): the rerun sends no RestoreObject,
    does not fetch what was saved again, and fetches the interrupted one again."""
    server = slow_restores
    online = {f"m/online-{i}": os.urandom(1024 * 1024) for i in range(3)}
    cold = {"m/cold-0": os.urandom(64 * 1024)}
    for key, data in online.items():
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=data)
    for key, data in cold.items():
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=data, StorageClass="DEEP_ARCHIVE")
    state = os.path.join(work_dir, "job.sqlite")
    out = os.path.join(work_dir, "out")
    cmd = [
        sys.executable, "-m", "fastxfer.cli", "restore", f"s3://{moto_bucket}/m/",
        "--endpoint-url", server.endpoint_url, "--tier", "Bulk", "--poll-interval", "0.3s",
        "--state", state, "--download", out, "--json", "-q",
    ]  # fmt: skip
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        env.pop(name, None)

    def gets() -> dict[str, int]:
        return {
            key: c.get("GetObject", 0)
            for (b, key), c in server.counts_by_key().items()
            if b == moto_bucket and key
        }

    slow = dict(env, FASTXFER_BWLIMIT_DOWN="512K", FASTXFER_CONCURRENCY="1")
    proc = subprocess.Popen(
        cmd, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        _poll(
            lambda: (
                _downloaded_in_state(state) >= 1
                and sum(gets().get(k, 0) for k in online) > _downloaded_in_state(state)
            ),
            60,
            "one object saved and the next one being downloaded",
        )
        saved_before = _downloaded_in_state(state)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    before = gets()
    assert saved_before < len(online) + len(cold)

    done = subprocess.run(cmd, env=env, capture_output=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    assert report["requests"]["RestoreObject"] == 0
    assert report["failed"] == 0
    after = gets()
    refetched = [k for k in online if after.get(k, 0) > before.get(k, 0)]
    complete_before = [k for k in online if before.get(k, 0) == 1 and k not in refetched]
    assert len(complete_before) >= saved_before  # what was saved is not fetched again
    assert all(after.get(k, 0) <= 2 for k in online)  # at most the interrupted one twice
    for key, data in (*online.items(), *cold.items()):
        with open(os.path.join(out, key.removeprefix("m/")), "rb") as f:
            assert f.read() == data, key
    assert not [n for n in os.listdir(out) if ".fastxfer-" in n]  # no temp file left


async def test_failed_transfers_give_back_every_slot_and_buffer(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    """A range cut with no retry allowed fails the download, a part cut fails the
    upload: afterwards the manager holds no connection, stream or buffer (parts
    and ranges created in the step that failed were cancelled before they ran),
    and its next transfers run as before."""
    data = os.urandom(40 * MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=data)
    s3.head_object(Bucket=bucket, Key="obj")
    src = os.path.join(work_dir, "src")
    with open(src, "wb") as f:
        f.write(data)
    async with FaultProxy(
        "127.0.0.1",
        rclone_server.port,
        cut_response_after=1 * MiB,
        cut_request_after=3 * MiB,
        faults=1000,  # every connection that gets that far, until the second phase
    ) as px:
        cfg = config_for(
            px.endpoint_url,
            rclone_server,
            work_dir,
            max_attempts=1,
            download_part_size=5 * MiB,
            part_size=5 * MiB,
            memory_limit=64 * MiB,
        )
        async with TransferManager(cfg) as tm:
            with pytest.raises(FastxferError):
                await asyncio.wait_for(tm.download(bucket, "obj", os.path.join(work_dir, "d1")), 30)
            with pytest.raises(FastxferError):
                await asyncio.wait_for(tm.upload(src, bucket, "up"), 30)
            assert px.cuts >= 2
            px.faults = px.cuts  # no more cuts

            def held() -> tuple[int, int, int]:
                stats = tm.stats()
                streams = tm.session.streams
                return (
                    stats.connections_in_use,
                    stats.memory_in_use,
                    streams.in_use if streams is not None else 0,
                )

            await wait_until(lambda: held() == (0, 0, 0), 5, f"nothing held (held: {held()})")
            dest = os.path.join(work_dir, "d2")
            await asyncio.wait_for(tm.download(bucket, "obj", dest), 30)
            await asyncio.wait_for(tm.upload(src, bucket, "up"), 30)
            assert held() == (0, 0, 0)
    assert file_sha(dest) == sha(data)
    assert leftovers(work_dir) == []
