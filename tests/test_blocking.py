"""BlockingTransferManager against a real server (rclone serve s3)."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastxfer import (
    BadCredentials,
    ColdObject,
    FastxferError,
    NoSuchBucket,
    NoSuchKey,
    TransferConfig,
    UsageError,
)
from fastxfer.blocking import BlockingTransferManager
from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server


@pytest.fixture
def threads_unchanged() -> Iterator[None]:
    """Fail when a test leaves a thread behind."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()


@pytest.fixture
def xfer(
    make_config: Callable[..., TransferConfig], threads_unchanged: None
) -> Iterator[BlockingTransferManager]:
    with BlockingTransferManager(make_config(max_concurrency=8)) as x:
        yield x
    assert x.closed


def test_round_trip(xfer: BlockingTransferManager, bucket: str, work_dir: str, s3: Any) -> None:
    src = os.path.join(work_dir, "src.bin")
    data = os.urandom(3 * MiB + 17)
    with open(src, "wb") as f:
        f.write(data)
    stats = xfer.upload(src, bucket, "a/src.bin", metadata={"k": "v"})
    assert stats.state == "done"
    assert stats.bytes_done == len(data)
    xfer.upload(b"hello", bucket, "a/hello.txt", storage_class="STANDARD_IA")

    info = xfer.head(bucket, "a/src.bin")
    assert info.size == len(data)
    assert info.metadata.get("k") == "v"
    assert [o.key for o in xfer.list(bucket, "a/")] == ["a/hello.txt", "a/src.bin"]
    assert [(o.key, o.size) for o in xfer.list(bucket, "a/h")] == [("a/hello.txt", 5)]

    dest = os.path.join(work_dir, "dest.bin")
    down = xfer.download(bucket, "a/src.bin", dest)
    assert down.bytes_done == len(data)
    with open(dest, "rb") as f:
        assert f.read() == data

    assert xfer.delete_many(bucket, ["a/src.bin", "a/hello.txt", "a/never-existed"]) == []
    assert xfer.list(bucket, "a/") == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_list_pages_and_delimiter(xfer: BlockingTransferManager, bucket: str) -> None:
    futures = [xfer.submit_upload(b"x", bucket, f"p/{i:04d}") for i in range(1005)]
    futures.append(xfer.submit_upload(b"y", bucket, "p/sub/deeper"))
    for f in concurrent.futures.as_completed(futures):
        assert f.result().state == "done"
    keys = [o.key for o in xfer.list(bucket, "p/")]
    assert len(keys) == 1006
    assert keys == sorted(keys)
    shallow = xfer.list(bucket, "p/", delimiter="/")
    assert len([o for o in shallow if not o.is_prefix]) == 1005
    assert [o.key for o in shallow if o.is_prefix] == ["p/sub/"]
    assert xfer.delete_many(bucket, keys) == []
    assert xfer.list(bucket, "p/") == []


def test_exceptions_reach_the_caller_unchanged(
    xfer: BlockingTransferManager, bucket: str, work_dir: str
) -> None:
    with pytest.raises(NoSuchKey) as info:
        xfer.head(bucket, "missing")
    assert info.value.key == "missing"
    with pytest.raises(NoSuchKey):
        xfer.download(bucket, "missing", os.path.join(work_dir, "x"))
    assert not os.path.exists(os.path.join(work_dir, "x"))
    with pytest.raises(NoSuchBucket):
        xfer.upload(b"data", "no-such-bucket-fx", "k")
    fut = xfer.submit_download(bucket, "missing", os.path.join(work_dir, "y"))
    with pytest.raises(NoSuchKey):
        fut.result()
    with pytest.raises(UsageError):
        xfer.upload(b"data", bucket, "k", storage_class="COLDEST")

    class Boom(Exception):
        pass

    async def fails(_tm: Any) -> None:
        raise Boom("mine")

    with pytest.raises(Boom, match="mine"):
        xfer.call(fails)
    # The manager is still usable after failures.
    xfer.upload(b"ok", bucket, "ok")
    assert xfer.head(bucket, "ok").size == 2


def test_bad_credentials(
    rclone_server: LocalS3Server, bucket: str, threads_unchanged: None
) -> None:
    config = TransferConfig(
        endpoint_url=rclone_server.endpoint_url,
        aws_access_key_id="nobody",
        aws_secret_access_key="wrong",
    )
    with BlockingTransferManager(config) as x, pytest.raises(BadCredentials):
        x.upload(b"data", bucket, "k")


def test_failed_start_leaks_nothing(threads_unchanged: None) -> None:
    with pytest.raises(FastxferError):
        BlockingTransferManager(TransferConfig(profile="fastxfer-no-such-profile"))


def test_failed_background_start_is_raised_by_every_call_and_leaks_nothing(
    threads_unchanged: None,
) -> None:
    """start_in_background: the constructor returns at once; the start's error
    comes from wait_started and from every call (not a "closed" RuntimeError),
    and close ends the thread without raising it again."""
    x = BlockingTransferManager(
        TransferConfig(profile="fastxfer-no-such-profile"), start_in_background=True
    )
    with pytest.raises(FastxferError, match="fastxfer-no-such-profile") as first:
        x.wait_started()
    assert x.closed
    with pytest.raises(FastxferError) as again:
        x.upload(b"data", "bucket", "k")
    assert again.value is first.value
    x.close()
    x.close()


def test_background_start_serves_calls_made_before_it_is_done(
    make_config: Callable[..., TransferConfig], bucket: str, threads_unchanged: None
) -> None:
    x = BlockingTransferManager(make_config(), start_in_background=True)
    with x:
        futures = [x.submit_upload(f"{i}".encode(), bucket, f"bg/{i}") for i in range(5)]
        assert [f.result().bytes_done for f in futures] == [1] * 5
        assert sorted(i.key for i in x.list(bucket, "bg/")) == [f"bg/{i}" for i in range(5)]
    assert x.closed
    # Closing one whose start is still under way waits for it, then closes it.
    y = BlockingTransferManager(make_config(), start_in_background=True)
    y.close()
    assert y.closed


def test_close_is_idempotent_and_final(
    make_config: Callable[..., TransferConfig], bucket: str, threads_unchanged: None
) -> None:
    x = BlockingTransferManager(make_config())
    x.upload(b"1", bucket, "k")
    x.close()
    x.close()
    with x:  # entering a closed manager is harmless; leaving it closes again
        pass
    assert x.closed
    with pytest.raises(RuntimeError, match="closed"):
        x.upload(b"2", bucket, "k")
    with pytest.raises(RuntimeError, match="closed"):
        x.submit_download(bucket, "k", "/nonexistent")


def test_close_drains_running_transfers(
    make_config: Callable[..., TransferConfig], bucket: str, threads_unchanged: None, s3: Any
) -> None:
    x = BlockingTransferManager(make_config())
    futures = [x.submit_upload(os.urandom(100_000), bucket, f"d/{i}") for i in range(20)]
    x.close()
    assert all(f.result().state == "done" for f in futures)
    assert s3.list_objects_v2(Bucket=bucket, Prefix="d/")["KeyCount"] == 20


def _slow_config(make_config: Callable[..., TransferConfig]) -> TransferConfig:
    # 24 MiB at 2 MiB/s in 5 MiB parts: a multipart upload that takes ~12 s.
    return make_config(
        part_size=5 * MiB, multipart_threshold=5 * MiB, bwlimit_up=2 * MiB, max_concurrency=4
    )


def test_cancel_a_future_aborts_the_upload(
    make_config: Callable[..., TransferConfig], bucket: str, threads_unchanged: None, s3: Any
) -> None:
    with BlockingTransferManager(_slow_config(make_config)) as x:
        fut = x.submit_upload(os.urandom(24 * MiB), bucket, "big")
        _wait_for_multipart(s3, bucket)
        assert fut.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            fut.result()
    # Leaving the block waited for the abort.
    assert _incomplete_uploads(s3, bucket) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_close_cancel_and_exception_in_block(
    make_config: Callable[..., TransferConfig], bucket: str, threads_unchanged: None, s3: Any
) -> None:
    started = time.monotonic()
    futures: list[concurrent.futures.Future[Any]] = []

    def body() -> None:
        with BlockingTransferManager(_slow_config(make_config)) as x:
            futures.append(x.submit_upload(os.urandom(24 * MiB), bucket, "big"))
            _wait_for_multipart(s3, bucket)
            raise KeyError("leave")

    with pytest.raises(KeyError):
        body()
    (fut,) = futures
    assert time.monotonic() - started < 8  # cancelled, not drained
    assert fut.cancelled()
    assert _incomplete_uploads(s3, bucket) == []


def _incomplete_uploads(s3: Any, bucket: str) -> list[Any]:
    try:
        uploads: list[Any] = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    except s3.exceptions.NoSuchUpload:
        return []  # rclone's answer to an empty listing after an abort
    return uploads


def _wait_for_multipart(s3: Any, bucket: str) -> None:
    deadline = time.monotonic() + 10
    while not _incomplete_uploads(s3, bucket):
        assert time.monotonic() < deadline, "the multipart upload never started"
        time.sleep(0.05)


def test_many_threads_share_one_manager(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str, threads_unchanged: None
) -> None:
    with BlockingTransferManager(make_config(max_concurrency=4)) as x:

        def worker(n: int) -> None:
            for i in range(5):
                data = os.urandom(50_000 + n * 1000 + i)
                key = f"t{n}/{i}"
                x.upload(data, bucket, key)
                dest = os.path.join(work_dir, f"{n}-{i}")
                x.download(bucket, key, dest)
                with open(dest, "rb") as f:
                    assert f.read() == data
                assert x.head(bucket, key).size == len(data)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for f in [pool.submit(worker, n) for n in range(8)]:
                f.result()
        stats = x.stats()
        assert stats.connections_peak <= 4
        assert stats.transfers_active == 0
        assert len(x.list(bucket)) == 40


def test_blocking_call_from_the_loop_thread_is_refused(
    xfer: BlockingTransferManager, bucket: str
) -> None:
    async def inside(_tm: Any) -> None:
        xfer.head(bucket, "k")

    with pytest.raises(RuntimeError, match="own loop thread"):
        xfer.call(inside)


def _run_script(
    body: str, rclone_server: LocalS3Server, *args: str
) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import sys
        from fastxfer import TransferConfig
        from fastxfer.blocking import BlockingTransferManager
        endpoint, key, secret = sys.argv[1:4]
        config = TransferConfig(
            endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret
        )
        bucket = sys.argv[4]
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            script,
            rclone_server.endpoint_url,
            rclone_server.access_key,
            rclone_server.secret_key,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_interpreter_exit_without_close_drains(
    rclone_server: LocalS3Server, bucket: str, s3: Any
) -> None:
    """A forgotten manager: the atexit hook finishes its work and the process exits 0."""
    r = _run_script(
        """
        x = BlockingTransferManager(config)
        for i in range(10):
            x.submit_upload(b"z" * 100_000, bucket, f"exit/{i}")
        print("submitted")
        """,
        rclone_server,
        bucket,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "submitted"
    assert r.stderr == ""
    assert s3.list_objects_v2(Bucket=bucket, Prefix="exit/")["KeyCount"] == 10


def test_interpreter_exit_after_close_and_on_error(
    rclone_server: LocalS3Server, bucket: str
) -> None:
    r = _run_script(
        """
        with BlockingTransferManager(config) as x:
            x.upload(b"1", bucket, "k")
        y = BlockingTransferManager(config)
        y.head(bucket, "missing")
        """,
        rclone_server,
        bucket,
    )
    assert r.returncode == 1
    assert "NoSuchKey" in r.stderr
    assert "Exception in thread" not in r.stderr
    assert "Warning" not in r.stderr


def test_restore_job_on_the_realistic_server(
    moto_config: Callable[..., TransferConfig],
    moto_bucket: str,
    moto_server: Any,
    work_dir: str,
    threads_unchanged: None,
) -> None:
    """Cold objects: one batch of restores, wait for each, download it."""
    from fastxfer.restore import RestoreOptions

    keys = [f"cold/{i}" for i in range(3)]
    state = os.path.join(work_dir, "state.sqlite")
    with BlockingTransferManager(moto_config()) as x:
        for k in keys:
            x.upload(k.encode() * 1000, moto_bucket, k, storage_class="DEEP_ARCHIVE")
        assert x.head(moto_bucket, keys[0]).is_cold
        with pytest.raises(ColdObject):
            x.download(moto_bucket, keys[0], os.path.join(work_dir, "too-early"))
        moto_server.reset_counts()
        options = RestoreOptions(
            bucket=moto_bucket, keys=tuple(keys), poll_interval=0.2, state_path=state
        )
        with x.restore_job(options) as job:
            assert keys[0] in job
            for k in keys:
                status = job.wait_readable(k)
                assert status.key == k
                assert job.eta(k) == 0
                dest = os.path.join(work_dir, k.replace("/", "_"))
                x.download(moto_bucket, k, dest)
                with open(dest, "rb") as f:
                    assert f.read() == k.encode() * 1000
        assert moto_server.counts().get("RestoreObject") == 3
        # A whole job in one call: nothing left to request, everything downloaded.
        report = x.restore(
            RestoreOptions(
                bucket=moto_bucket,
                prefix="cold/",
                poll_interval=0.2,
                state_path=state,
                download_dir=os.path.join(work_dir, "all"),
            )
        )
        assert report.downloaded == 3
        assert moto_server.counts().get("RestoreObject") == 3
