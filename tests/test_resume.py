"""Crash resume: the upload journal, against rclone serve s3 and a real `fastxfer` process.

A `fastxfer cp` is killed with SIGKILL once the server holds about half of the
parts (read from ListParts, not from a clock); the same upload run again sends
only the missing parts and completes an identical object.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest

from fastxfer import TransferConfig, TransferFailed, TransferManager, integrity
from fastxfer.journal import PartRecord, SourceId, UploadJournal
from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server
from fastxfer.state import StateDB

PART = 8 * MiB


def write_random(path: str, size: int) -> bytes:
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return data


def journal_rows(state: str, table: str = "upload_journal") -> int:
    """Rows in one of the journal's tables (the uploads, or ``upload_journal_parts``)."""
    with StateDB.open(state) as db:
        row = db.query_one(f"SELECT COUNT(*) FROM {table}")
    assert row is not None
    return int(row[0])


def start_cli_upload(
    srv: LocalS3Server, src: str, bucket: str, key: str, state: str, *extra: str
) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID=srv.access_key,
        AWS_SECRET_ACCESS_KEY=srv.secret_key,
        FASTXFER_STATE=state,
    )
    cmd = [
        sys.executable,
        "-m",
        "fastxfer.cli",
        "cp",
        src,
        f"s3://{bucket}/{key}",
        "--endpoint-url",
        srv.endpoint_url,
        "--part-size",
        "8MiB",
        "--multipart-threshold",
        "8MiB",
        "--concurrency",
        "2",
        "--no-progress",
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def open_uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """ListMultipartUploads; rclone serve s3 answers an empty one with NoSuchUpload."""
    from botocore.exceptions import ClientError

    try:
        return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
            return []
        raise


def wait_for_parts(s3: Any, bucket: str, key: str, at_least: int, proc: Any) -> str:
    """Poll the server until one upload of ``key`` holds ``at_least`` parts; its UploadId."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the upload ended before it could be killed"
        for u in open_uploads(s3, bucket):
            if u["Key"] != key:
                continue
            parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=u["UploadId"]).get("Parts", [])
            if len(parts) >= at_least:
                return str(u["UploadId"])
        time.sleep(0.02)
    raise AssertionError("the server never held enough parts")


def kill_at_parts(
    s3: Any, bucket: str, key: str, parts: int, proc: Any, state: str | None = None
) -> str:
    """SIGKILL ``proc`` once the server holds ``parts`` parts of its upload (and,
    given ``state``, its journal has recorded them: a part the server lists may
    not be journaled yet, the client writes it down once the answer is in)."""
    try:
        upload_id = wait_for_parts(s3, bucket, key, parts, proc)
        deadline = time.monotonic() + 30
        while state is not None and journal_rows(state, "upload_journal_parts") < parts:
            assert time.monotonic() < deadline, "the journal never caught up with the server"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    return upload_id


def config(srv: LocalS3Server, state: str, **kw: Any) -> TransferConfig:
    return TransferConfig(
        endpoint_url=srv.endpoint_url,
        aws_access_key_id=srv.access_key,
        aws_secret_access_key=srv.secret_key,
        part_size=PART,
        multipart_threshold=PART,
        max_concurrency=2,
        state_path=state,
        **kw,
    )


@pytest.mark.parametrize("checksum", ["client", "md5"])
async def test_upload_killed_at_half_resumes_with_the_missing_parts(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any, checksum: str
) -> None:
    size = 24 * PART
    src = os.path.join(work_dir, "src")
    data = write_random(src, size)
    state = os.path.join(work_dir, "state.sqlite")
    # A bandwidth cap makes the run last a few seconds, so the kill lands mid-way.
    proc = start_cli_upload(
        rclone_server, src, bucket, "obj", state, "--bwlimit-up", "48MiB/s", "--checksum", checksum
    )
    upload_id = kill_at_parts(s3, bucket, "obj", 12, proc, state)
    assert journal_rows(state) == 1
    stored = len(s3.list_parts(Bucket=bucket, Key="obj", UploadId=upload_id).get("Parts", []))

    async with TransferManager(config(rclone_server, state, checksum=checksum)) as tm:
        st = await tm.upload(src, bucket, "obj")
        assert await tm.list_multipart_uploads(bucket) == []

    sent = st.bytes_done - st.bytes_resumed
    assert st.bytes_done == size
    assert st.bytes_resumed >= 12 * PART  # the parts the server held (and the journal knew)
    assert sent < 0.6 * size
    assert st.requests.get("upload_part", 0) <= 24 - 12
    assert st.requests.get("create_multipart_upload", 0) == 0
    assert stored >= 12
    got = s3.get_object(Bucket=bucket, Key="obj")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert journal_rows(state) == 0


async def test_the_same_command_run_again_completes_the_upload(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    data = write_random(src, 16 * PART)
    state = os.path.join(work_dir, "state.sqlite")
    proc = start_cli_upload(rclone_server, src, bucket, "obj", state, "--bwlimit-up", "32MiB/s")
    kill_at_parts(s3, bucket, "obj", 6, proc)
    again = start_cli_upload(rclone_server, src, bucket, "obj", state)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err.decode()
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    assert open_uploads(s3, bucket) == []
    assert journal_rows(state) == 0


async def test_a_source_changed_since_the_crash_starts_over(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    write_random(src, 8 * PART)
    state = os.path.join(work_dir, "state.sqlite")
    # The journal says an upload is in flight, for a file that has since changed.
    with StateDB.open(state) as db:
        created = s3.create_multipart_upload(Bucket=bucket, Key="obj")
        journal = UploadJournal(db, rclone_server.endpoint_url)
        st = os.stat(src)
        journal.begin(
            bucket, "obj", SourceId.of(src, st), created["UploadId"], PART, "client", "AAAAAAAAAAA="
        )
    data = write_random(src, 8 * PART)  # new content, new mtime
    async with TransferManager(config(rclone_server, state)) as tm:
        result = await tm.upload(src, bucket, "obj")
        assert await tm.list_multipart_uploads(bucket) == []  # the stale upload was aborted
    assert result.bytes_resumed == 0
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    assert journal_rows(state) == 0


async def test_a_resumed_upload_keeps_the_part_size_it_was_started_with(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    """Part sizes follow the connections allowed when an upload starts, so a rerun
    may plan other sizes than the interrupted run: the journal's size is kept
    (the stored parts stay usable) instead of starting over."""
    src = os.path.join(work_dir, "src")
    stored = 6 * MiB
    data = write_random(src, 8 * PART)
    state = os.path.join(work_dir, "state.sqlite")
    whole = integrity.to_b64(integrity.crc64nvme(data))
    created = s3.create_multipart_upload(
        Bucket=bucket, Key="obj", Metadata={integrity.METADATA_KEY: whole}
    )
    with StateDB.open(state) as db:
        journal = UploadJournal(db, rclone_server.endpoint_url)
        source = SourceId.of(src, os.stat(src))
        row = journal.begin(bucket, "obj", source, created["UploadId"], stored, "client", whole)
        for n in (1, 2, 3):
            chunk = data[(n - 1) * stored : n * stored]
            r = s3.upload_part(
                Bucket=bucket, Key="obj", UploadId=created["UploadId"], PartNumber=n, Body=chunk
            )
            journal.part_done(row, PartRecord(n, stored, r["ETag"], integrity.crc64nvme(chunk)))
    async with TransferManager(config(rclone_server, state)) as tm:
        st = await tm.upload(src, bucket, "obj")
        assert await tm.list_multipart_uploads(bucket) == []
    assert st.requests.get("create_multipart_upload", 0) == 0
    assert st.bytes_resumed == 3 * stored
    assert st.parts_total == -(-len(data) // stored)
    assert st.requests["upload_part"] == st.parts_total - 3
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    assert journal_rows(state) == 0


async def test_a_journal_that_cannot_be_written_leaves_no_upload_behind(
    rclone_server: LocalS3Server,
    bucket: str,
    work_dir: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The upload is created, then the journal fails (a full disk, a locked state
    file): the error reaches the caller, the created upload is aborted, and the
    open-uploads slot is given back (the next upload goes through)."""
    src = os.path.join(work_dir, "src")
    data = write_random(src, 3 * PART)
    state = os.path.join(work_dir, "state.sqlite")

    def broken(*args: Any, **kwargs: Any) -> int:
        raise sqlite3.OperationalError("database or disk is full")

    async with TransferManager(config(rclone_server, state, max_active_transfers=1)) as tm:
        with monkeypatch.context() as m:
            m.setattr(UploadJournal, "begin", broken)
            with pytest.raises(TransferFailed, match="database or disk is full"):
                await tm.upload(src, bucket, "obj")
        assert await tm.list_multipart_uploads(bucket) == []
        st = await asyncio.wait_for(tm.upload(src, bucket, "obj"), timeout=60)
    assert st.bytes_done == len(data)


async def test_an_upload_the_server_lost_mid_way_starts_again_once(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    """NoSuchUpload mid-upload (a restarted server, another client's abort)."""
    src = os.path.join(work_dir, "src")
    data = write_random(src, 12 * PART)
    state = os.path.join(work_dir, "state.sqlite")
    cfg = config(rclone_server, state, bwlimit_up=32 * MiB)
    async with TransferManager(cfg) as tm:
        handle = tm.upload(src, bucket, "obj")
        deadline = time.monotonic() + 60
        while handle.stats().parts_done < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        for u in open_uploads(s3, bucket):
            s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
        st = await handle
        assert await tm.list_multipart_uploads(bucket) == []
    assert st.retries >= 1
    assert st.requests["create_multipart_upload"] == 2
    assert s3.get_object(Bucket=bucket, Key="obj")["Body"].read() == data
    assert journal_rows(state) == 0


def test_journal_round_trip_keeps_unsigned_crcs(work_dir: str) -> None:
    with StateDB.open(os.path.join(work_dir, "s.sqlite")) as db:
        j = UploadJournal(db, "http://x")
        src = SourceId("/a", 1, 2, 3, 4)
        row = j.begin("b", "k", src, "u1", PART, "server", None)
        j.part_done(row, PartRecord(1, PART, '"e1"', 2**64 - 1))
        j.part_done(row, PartRecord(2, PART, '"e2"', None))
        entry = j.find("b", "k")
        assert entry is not None
        assert entry.source == src
        assert entry.parts[1].crc == 2**64 - 1
        assert entry.parts[2].crc is None
        assert j.upload_ids("b") == {"u1"}
        assert UploadJournal(db, "http://other").find("b", "k") is None
        j.finish(row)
        assert j.find("b", "k") is None
        assert db.query("SELECT * FROM upload_journal_parts") == []


async def test_abort_uploads_spares_what_the_journal_can_resume(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    state = os.path.join(work_dir, "state.sqlite")
    journaled = s3.create_multipart_upload(Bucket=bucket, Key="mine")["UploadId"]
    s3.create_multipart_upload(Bucket=bucket, Key="stray")
    with StateDB.open(state) as db:
        UploadJournal(db, rclone_server.endpoint_url).begin(
            bucket, "mine", SourceId("/x", 1, 2, 3, 4), journaled, PART, "client", None
        )
    async with TransferManager(config(rclone_server, state)) as tm:
        plan = await tm.plan_abort(bucket)
        assert [u["Key"] for u in plan.abort] == ["stray"]
        assert [(u["Key"], why) for u, why in plan.spared] == [("mine", "resumable")]
        assert [u["Key"] for u in await tm.abort_incomplete_uploads(bucket)] == ["stray"]
        assert [u["UploadId"] for u in open_uploads(s3, bucket)] == [journaled]
        gone = await tm.abort_incomplete_uploads(bucket, include_resumable=True)
        assert [u["Key"] for u in gone] == ["mine"]
    assert open_uploads(s3, bucket) == []
