"""Batch restores: pure logic (table-driven), then real behaviour on the realistic moto server."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fastxfer import ColdObject, InvalidConfig, TransferConfig, TransferManager, UsageError
from fastxfer.restore import (
    DAY,
    GB,
    ObjectState,
    PriceTable,
    RestoreJob,
    RestoreOptions,
    RestoreStore,
    RestoreTier,
    _Obj,
    check_tier,
    classify,
    default_poll_interval,
    parse_duration,
    parse_restore_header,
)
from fastxfer.restore_cli import main as cli_main
from fastxfer.testing import FakeClock

from moto_realistic import RealisticMotoServer

# -- pure logic ----------------------------------------------------------------

DONE = 'ongoing-request="false", expiry-date="Fri, 23 Dec 2012 00:00:00 GMT"'


@pytest.mark.parametrize(
    ("storage_class", "header", "expected"),
    [
        ("STANDARD", None, ObjectState.READABLE),
        (None, None, ObjectState.READABLE),
        ("GLACIER_IR", None, ObjectState.READABLE),
        ("STANDARD_IA", None, ObjectState.READABLE),
        ("INTELLIGENT_TIERING", None, ObjectState.READABLE),
        ("GLACIER", None, ObjectState.COLD),
        ("DEEP_ARCHIVE", None, ObjectState.COLD),
        ("GLACIER", 'ongoing-request="true"', ObjectState.RESTORING),
        ("DEEP_ARCHIVE", DONE, ObjectState.RESTORED),
    ],
)
def test_classify(storage_class: str | None, header: str | None, expected: ObjectState) -> None:
    assert classify(storage_class, header) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (None, None)),
        ('ongoing-request="true"', (True, None)),
        (DONE, (False, datetime.datetime(2012, 12, 23, tzinfo=datetime.UTC).timestamp())),
    ],
)
def test_parse_restore_header(
    header: str | None, expected: tuple[bool | None, float | None]
) -> None:
    assert parse_restore_header(header) == expected


@pytest.mark.parametrize(
    ("storage_class", "tier", "seconds"),
    [
        ("GLACIER", RestoreTier.EXPEDITED, 60.0),
        ("GLACIER", RestoreTier.STANDARD, 3600.0),
        ("GLACIER", RestoreTier.BULK, 3600.0),
        ("DEEP_ARCHIVE", RestoreTier.STANDARD, 3600.0),
        ("DEEP_ARCHIVE", RestoreTier.BULK, 4 * 3600.0),
    ],
)
def test_default_poll_interval(storage_class: str, tier: RestoreTier, seconds: float) -> None:
    assert default_poll_interval(storage_class, tier) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"), [("1s", 1.0), ("2.5", 2.5), ("5m", 300.0), ("2h", 7200.0), ("1d", DAY)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1", "soon", "5 weeks"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InvalidConfig):
        parse_duration(text)


def test_tiers() -> None:
    assert RestoreTier.parse("bulk") is RestoreTier.BULK
    with pytest.raises(InvalidConfig, match="Expedited, Standard or Bulk"):
        RestoreTier.parse("fast")
    check_tier("GLACIER", RestoreTier.EXPEDITED)
    with pytest.raises(InvalidConfig, match="Expedited tier does not exist for DEEP_ARCHIVE"):
        check_tier("DEEP_ARCHIVE", RestoreTier.EXPEDITED)


def _objs(spec: list[tuple[str, int, ObjectState]]) -> list[_Obj]:
    return [_Obj(i, f"k{i}", size, sc, "", st) for i, (sc, size, st) in enumerate(spec)]


PRICES = PriceTable.load()
COLD = ObjectState.COLD


@pytest.mark.parametrize(
    ("objects", "tier", "download", "restores", "gets", "heads", "price_restore"),
    [
        # 1,000 x 1 GiB DEEP_ARCHIVE Bulk, 7 days: requests + per GB + the copy's storage.
        (
            [("DEEP_ARCHIVE", GB, COLD)] * 1000,
            RestoreTier.BULK,
            False,
            1000,
            0,
            0,
            1.0 * 0.025 + 1000 * 0.0025 + 1000 * 0.023 * 7 / 30,
        ),
        # GLACIER Bulk: free retrieval, only the copy's storage.
        ([("GLACIER", GB, COLD)] * 10, RestoreTier.BULK, False, 10, 0, 0, 10 * 0.023 * 7 / 30),
        # Downloads: below 16 MiB one GET and no HEAD; 40 MiB -> a HEAD and 3 ranged GETs.
        (
            [
                ("GLACIER", 1024, COLD),
                ("GLACIER", 40 * 1024 * 1024, COLD),
                ("STANDARD", 10, ObjectState.READABLE),
                ("GLACIER", 5, ObjectState.RESTORED),
                ("GLACIER", 5, ObjectState.RESTORING),
            ],
            RestoreTier.STANDARD,
            True,
            2,
            1 + 3 + 1 + 1 + 1,
            1,
            2 / 1000 * 0.05 + (1024 + 40 * 1024 * 1024) / GB * (0.01 + 0.023 * 7 / 30),
        ),
    ],
)
def test_cost_estimate(
    work_dir: str,
    objects: list[tuple[str, int, ObjectState]],
    tier: RestoreTier,
    download: bool,
    restores: int,
    gets: int,
    heads: int,
    price_restore: float,
) -> None:
    tm = TransferManager(TransferConfig(endpoint_url="http://127.0.0.1:1"))  # config only
    opts = RestoreOptions(
        bucket="b", prefix="", tier=tier, download_dir=work_dir if download else None
    )
    job = RestoreJob(tm, opts, clock=FakeClock(), prices=PRICES)
    job._objs = _objs(objects)
    est = job._estimate(job._snapshot_counts())
    assert est.requests.restore == restores
    assert est.requests.get == gets
    assert est.requests.head == heads
    assert est.price_restore == pytest.approx(price_restore)
    assert est.prices_date
    assert est.prices_source.startswith("https://")
    if restores:  # polls are estimated from the tier's typical time
        assert est.polls_estimated >= 2
        assert est.requests.list >= est.polls_estimated


async def test_expired_copy_is_requested_again_on_resume(work_dir: str) -> None:
    """A restored copy whose expiry passed (on the injected clock) goes back to COLD."""
    path = os.path.join(work_dir, "s.sqlite")
    clock = FakeClock(start=datetime.datetime(2030, 1, 1))
    opts = RestoreOptions(bucket="b", keys=("a", "b"), state_path=path)
    store = RestoreStore(path)
    now = clock.now().timestamp()
    objs = [
        _Obj(0, "a", 1, "GLACIER", "", ObjectState.RESTORED, now - 10, now - 1),
        _Obj(1, "b", 1, "GLACIER", "", ObjectState.RESTORED, now - 10, now + DAY),
    ]
    store.create(opts.spec(), "Standard", 7, objs)
    store.close()
    tm = TransferManager(TransferConfig(endpoint_url="http://127.0.0.1:1"))
    job = RestoreJob(tm, opts, clock=clock)
    await job._load(create=False)
    job._close()
    assert [o.state for o in job.objects()] == ["cold", "restored"]
    assert RestoreStore(path).load()[0].state is ObjectState.COLD


async def test_other_job_in_state_file_is_refused(work_dir: str) -> None:
    path = os.path.join(work_dir, "s.sqlite")
    store = RestoreStore(path)
    store.create({"bucket": "b", "prefix": "x/", "keys": []}, "Bulk", 1, [])
    store.close()
    tm = TransferManager(TransferConfig(endpoint_url="http://127.0.0.1:1"))
    job = RestoreJob(tm, RestoreOptions(bucket="b", prefix="y/", state_path=path))
    with pytest.raises(UsageError, match="belongs to another restore job"):
        await job.estimate()


# -- against the realistic moto server -----------------------------------------


@pytest.fixture
def server(moto_server: RealisticMotoServer) -> Iterator[RealisticMotoServer]:
    """The session server, put back to its defaults afterwards."""
    try:
        yield moto_server
    finally:
        moto_server.set_restore_delay(1.0)
        moto_server.set_list_restore_status(True)


def put_objects(s3: Any, bucket: str, objects: dict[str, tuple[bytes, str]]) -> None:
    def put(item: tuple[str, tuple[bytes, str]]) -> None:
        key, (body, sc) = item
        s3.put_object(Bucket=bucket, Key=key, Body=body, StorageClass=sc)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, objects.items()))


def bucket_counts(server: RealisticMotoServer, bucket: str) -> dict[str, int]:
    total: dict[str, int] = {}
    for (b, _), counts in server.counts_by_key().items():
        if b == bucket:
            for op, n in counts.items():
                total[op] = total.get(op, 0) + n
    return total


def body(key: str, size: int = 1024) -> bytes:
    return (key.encode() * (size // max(1, len(key)) + 1))[:size]


async def test_each_cold_object_restored_once_and_online_read_directly(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    server.set_restore_delay(0.5)
    classes = ["DEEP_ARCHIVE", "DEEP_ARCHIVE", "GLACIER", "GLACIER", "GLACIER_IR", "STANDARD"]
    objects = {f"p/{i}-{sc}": (body(f"{i}{sc}"), sc) for i, sc in enumerate(classes)}
    put_objects(moto_s3, moto_bucket, objects)
    dest = os.path.join(work_dir, "out")
    opts = RestoreOptions(
        bucket=moto_bucket,
        prefix="p/",
        tier=RestoreTier.BULK,
        poll_interval=0.2,
        download_dir=dest,
        state_path=os.path.join(work_dir, "job.sqlite"),
    )
    async with TransferManager(moto_config()) as tm:
        report = await RestoreJob(tm, opts).run()
    assert not report.failed
    assert report.downloaded == 6
    assert report.poll_mode == "list"
    for key, (data, sc) in objects.items():
        with open(os.path.join(dest, key.removeprefix("p/")), "rb") as f:
            assert f.read() == data
        counts = server.key_counts(moto_bucket, key)
        cold = sc in ("GLACIER", "DEEP_ARCHIVE")
        assert counts.get("RestoreObject", 0) == (1 if cold else 0), key
        assert counts.get("GetObject") == 1, key  # online classes read directly
    assert report.requests.restore == 4
    assert report.count(ObjectState.READABLE) == 2

    # Again with the same state: nothing is requested or downloaded again.
    before = bucket_counts(server, moto_bucket)
    async with TransferManager(moto_config()) as tm:
        again = await RestoreJob(tm, opts).run()
    after = bucket_counts(server, moto_bucket)
    assert again.resumed
    assert again.downloaded == 6
    assert again.requests.restore == 0
    assert again.requests.get == 0
    assert after.get("RestoreObject") == before.get("RestoreObject") == 4
    assert after.get("GetObject") == before.get("GetObject")


async def test_first_download_starts_before_last_object_thaws(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    server.set_restore_delay(0.5)
    keys = [f"k{i:02d}" for i in range(20)]
    put_objects(moto_s3, moto_bucket, {k: (body(k), "GLACIER") for k in keys})
    opts = RestoreOptions(
        bucket=moto_bucket,
        keys=tuple(keys),
        tps=10,  # requests spread over ~2 s, so restores complete over ~2 s
        poll_interval=0.2,
        download_dir=work_dir,
        state_path=os.path.join(work_dir, "job.sqlite"),
    )
    async with TransferManager(moto_config()) as tm:
        report = await RestoreJob(tm, opts).run()
    assert report.downloaded == 20
    assert not report.failed
    completed = [server.restore_completed_at(moto_bucket, k) for k in keys]
    assert all(t is not None for t in completed)
    first_download = min(o.download_started_at or 1e18 for o in report.objects)
    assert first_download < max(t for t in completed if t is not None)
    for o in report.objects:
        assert o.thawed_seen_at is not None
        assert o.download_started_at is not None
        assert o.download_started_at - o.thawed_seen_at <= 0.2


async def test_killed_mid_wait_resumes_without_duplicate_requests(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    server.set_restore_delay(1.5)
    keys = {f"d/{i}": (body(str(i)), "DEEP_ARCHIVE") for i in range(10)}
    put_objects(moto_s3, moto_bucket, keys)
    opts = RestoreOptions(
        bucket=moto_bucket,
        prefix="d/",
        poll_interval=0.2,
        download_dir=os.path.join(work_dir, "out"),
        state_path=os.path.join(work_dir, "job.sqlite"),
    )
    async with TransferManager(moto_config()) as tm:
        task = asyncio.create_task(RestoreJob(tm, opts).run())
        deadline = time.monotonic() + 10
        while bucket_counts(server, moto_bucket).get("ListObjectsV2", 0) < 3:  # polling
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert bucket_counts(server, moto_bucket).get("GetObject", 0) == 0  # still waiting

    async with TransferManager(moto_config()) as tm:
        report = await RestoreJob(tm, opts).run()
    assert report.resumed
    assert report.requests.restore == 0
    assert report.downloaded == 10
    assert not report.failed
    for key in keys:
        assert server.restore_requests(moto_bucket, key) == 1


async def test_head_fallback_when_list_has_no_restore_status(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    server.set_restore_delay(0.5)
    server.set_list_restore_status(False)
    keys = [f"h{i}" for i in range(5)]
    put_objects(moto_s3, moto_bucket, {k: (body(k), "GLACIER") for k in keys})
    opts = RestoreOptions(
        bucket=moto_bucket,
        keys=tuple(keys),
        poll_interval=0.2,
        state_path=os.path.join(work_dir, "job.sqlite"),
    )
    async with TransferManager(moto_config()) as tm:
        report = await RestoreJob(tm, opts).run()
    assert report.poll_mode == "head"
    assert report.count(ObjectState.RESTORED) == 5
    assert report.requests.restore == 5
    assert report.requests.list == 1  # the one that showed LIST does not answer
    assert report.requests.head >= 5 + 5  # inventory + at least one poll each


async def test_cold_get_without_job_and_expedited_deep_archive(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    put_objects(moto_s3, moto_bucket, {"cold": (b"x" * 100, "DEEP_ARCHIVE")})
    async with TransferManager(moto_config()) as tm:
        with pytest.raises(ColdObject) as info:
            await tm.download(moto_bucket, "cold", os.path.join(work_dir, "cold"))
        assert f"fastxfer restore s3://{moto_bucket}/cold" in str(info.value)
        opts = RestoreOptions(
            bucket=moto_bucket,
            keys=("cold",),
            tier=RestoreTier.EXPEDITED,
            state_path=os.path.join(work_dir, "job.sqlite"),
        )
        with pytest.raises(InvalidConfig, match="Expedited tier does not exist"):
            await RestoreJob(tm, opts).run()
    assert server.restore_requests(moto_bucket, "cold") == 0  # rejected before sending


def test_cli_1000_deep_archive(
    server: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str, capsys: Any
) -> None:
    """The issue's must-show, through the CLI: dry-run counts equal the requests made."""
    n, poll = 1000, 1.0
    server.set_restore_delay(3.0)
    put_objects(
        moto_s3,
        moto_bucket,
        {f"arch/{i:04d}": (body(f"{i:04d}"), "DEEP_ARCHIVE") for i in range(n)},
    )
    state = os.path.join(work_dir, "job.sqlite")
    base = [
        "restore",
        f"s3://{moto_bucket}/arch/",
        "--endpoint-url",
        server.endpoint_url,
        "--tier",
        "Bulk",
        "--poll-interval",
        f"{poll}s",
        "--state",
        state,
        "--download",
        os.path.join(work_dir, "out"),
        "--json",
    ]
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert cli_main([*base, "--dry-run"]) == 0
        dry = json.loads(capsys.readouterr().out)
        assert not os.path.exists(state)  # a dry run writes nothing
        before = bucket_counts(server, moto_bucket)
        started = time.monotonic()
        assert cli_main(base) == 0
        elapsed = time.monotonic() - started
        run = json.loads(capsys.readouterr().out)
        after = bucket_counts(server, moto_bucket)
        assert cli_main(base) == 0
        rerun = json.loads(capsys.readouterr().out)
        final = bucket_counts(server, moto_bucket)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def made(op: str) -> int:
        return after.get(op, 0) - before.get(op, 0)

    assert made("RestoreObject") == n == dry["requests"]["RestoreObject"]
    assert made("GetObject") == n == dry["requests"]["GET"]
    assert run["requests"]["RestoreObject"] == n
    assert run["requests"]["GET"] == n
    assert run["requests"]["LIST"] == made("ListObjectsV2")
    assert run["requests"]["HEAD"] == made("HeadObject")
    assert run["downloaded"] == n
    assert run["failed"] == 0
    objs = run["per_object"]
    lags = [o["download_started_at"] - o["thawed_seen_at"] for o in objs]
    # Each download starts once its object is seen thawed, and the job does
    # not wait for the whole batch: the first download starts before the last
    # thaw is seen.  (How quickly, under load, is a benchmark's business:
    # benchmarks/restore_scenario.py records the lag against one poll interval.)
    assert min(lags) >= 0
    assert min(o["download_started_at"] for o in objs) < max(o["thawed_seen_at"] for o in objs)
    assert final.get("RestoreObject") == after.get("RestoreObject")  # none on a re-run
    assert final.get("GetObject") == after.get("GetObject")
    assert rerun["requests"]["RestoreObject"] == 0
    assert rerun["downloaded"] == n
    print(
        f"\n1000 DEEP_ARCHIVE: {elapsed:.1f} s, requests {run['requests']}, "
        f"polls {run['polls']}, max thaw->download lag {max(lags):.3f} s, "
        f"dry-run {dry['requests']} ${dry['total_price']:.4f}"
    )
