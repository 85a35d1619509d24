"""Batch restores: pure logic (table-driven), the per-object API in virtual time against a
fake session, then real behaviour on the realistic moto server."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from fastxfer import (
    AccessDenied,
    BadCredentials,
    ColdObject,
    FastxferError,
    InvalidConfig,
    S3Error,
    TransferConfig,
    TransferManager,
    UsageError,
)
from fastxfer.cli import main as cli_main
from fastxfer.coldserver import RealisticMotoServer
from fastxfer.objectinfo import ObjectInfo
from fastxfer.planning import download_get_count
from fastxfer.restore import (
    DAY,
    GB,
    ObjectRecord,
    ObjectState,
    PriceTable,
    RestoreJob,
    RestoreOptions,
    RestoreStore,
    RestoreTier,
    check_tier,
    classify,
    default_poll_interval,
    estimate_cost,
    job_id,
    parse_duration,
    parse_restore_header,
    summarize_estimate,
)
from fastxfer.session import Session
from fastxfer.testing import FakeClock
from fastxfer.transfer import TransferHandle

# -- pure logic ----------------------------------------------------------------

DONE = 'ongoing-request="false", expiry-date="Fri, 23 Dec 2012 00:00:00 GMT"'
MiB = 1024 * 1024


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


def _objs(spec: list[tuple[str, int, ObjectState]]) -> list[ObjectRecord]:
    return [ObjectRecord(i, f"k{i}", size, sc, "", st) for i, (sc, size, st) in enumerate(spec)]


PRICES = PriceTable.load()
COLD = ObjectState.COLD
CONFIG = TransferConfig(endpoint_url="http://127.0.0.1:1")


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
        # Downloads: below 16 MiB one GET and no HEAD; 40 MiB -> a HEAD and 8 ranged GETs
        # (5 MiB each: at the whole budget of 64 connections, as many as keep them busy).
        (
            [
                ("GLACIER", 1024, COLD),
                ("GLACIER", 40 * MiB, COLD),
                ("STANDARD", 10, ObjectState.READABLE),
                ("GLACIER", 5, ObjectState.RESTORED),
                ("GLACIER", 5, ObjectState.RESTORING),
            ],
            RestoreTier.STANDARD,
            True,
            2,
            1 + 8 + 1 + 1 + 1,
            1,
            2 / 1000 * 0.05 + (1024 + 40 * MiB) / GB * (0.01 + 0.023 * 7 / 30),
        ),
    ],
)
def test_cost_estimate(
    objects: list[tuple[str, int, ObjectState]],
    tier: RestoreTier,
    download: bool,
    restores: int,
    gets: int,
    heads: int,
    price_restore: float,
) -> None:
    est = estimate_cost(
        _objs(objects), tier=tier, days=7, config=CONFIG, prices=PRICES, download=download
    )
    assert est.requests.restore == restores
    assert est.requests.get == gets
    assert est.requests.head == heads
    assert est.price_restore == pytest.approx(price_restore)
    assert est.prices_date
    assert est.prices_source.startswith("https://")
    if restores:  # polls are estimated from the tier's typical time
        assert est.polls_estimated >= 2
        assert est.requests.list >= est.polls_estimated


@pytest.mark.parametrize(("size", "gets"), [(GB, 64), (10 * GB, 160)])
def test_estimate_gets_are_the_download_plan(size: int, gets: int) -> None:
    """With the default config a download of 1 GiB makes 64 GETs (16 MiB ranges, one per
    connection) and 10 GiB 160 (64 MiB ranges): the estimate uses the planner the
    downloads use."""
    cfg = TransferConfig()
    est = estimate_cost(
        [ObjectRecord(0, "k", size, "DEEP_ARCHIVE", "", COLD)],
        tier=RestoreTier.BULK,
        days=7,
        config=cfg,
        prices=PRICES,
        download=True,
    )
    assert est.requests.get == gets == download_get_count(size, cfg)
    assert f"GET {gets}," in summarize_estimate(est)


def test_estimate_skips_files_already_downloaded() -> None:
    objs = _objs([("GLACIER", 10, COLD), ("GLACIER", 10, COLD)])
    est = estimate_cost(
        objs,
        tier=RestoreTier.BULK,
        days=1,
        config=CONFIG,
        prices=PRICES,
        download=True,
        downloaded={"k0"},
    )
    assert (est.requests.restore, est.requests.get, est.objects_downloaded) == (1, 1, 1)


# -- the state file ------------------------------------------------------------


def _no_download(bucket: str, key: str, dest: str, size: int | None) -> TransferHandle:
    raise AssertionError(f"unexpected download of {key}")


def _job(session: Any, opts: RestoreOptions) -> RestoreJob:
    return RestoreJob(session, opts, start_download=_no_download)


async def test_expired_copy_is_requested_again_on_resume(work_dir: str) -> None:
    """A restored copy whose expiry passed (on the injected clock) goes back to COLD."""
    path = os.path.join(work_dir, "s.sqlite")
    clock = FakeClock(start=datetime.datetime(2030, 1, 1))
    opts = RestoreOptions(bucket="b", keys=("a", "b"), state_path=path)
    store = RestoreStore(path)
    now = clock.now().timestamp()
    objs = [
        ObjectRecord(0, "a", 1, "GLACIER", "", ObjectState.RESTORED, now - 10, now - 1),
        ObjectRecord(1, "b", 1, "GLACIER", "", ObjectState.RESTORED, now - 10, now + DAY),
    ]
    jid = store.create(opts.spec(), "Standard", 7, objs, created_at=now)
    store.close()
    job = _job(Session(CONFIG, clock), opts)  # a session never entered: no request is made
    await job._load(create=False)
    job._close()
    assert [o.state for o in job.objects()] == ["cold", "restored"]
    store = RestoreStore(path)
    assert store.load(jid)[0].state is ObjectState.COLD
    store.close()


def test_one_state_file_holds_many_jobs(work_dir: str) -> None:
    path = os.path.join(work_dir, "s.sqlite")
    one = RestoreOptions(bucket="b", prefix="x/", state_path=path)
    two = RestoreOptions(bucket="b", keys=("k",), state_path=path)
    store = RestoreStore(path)
    try:
        assert store.spec() is None
        store.create(one.spec(), "Bulk", 1, _objs([("GLACIER", 1, COLD)]), created_at=1.0)
        only = store.spec()  # the only job: what `restore-status --state FILE` reads
        assert only is not None
        assert (only["prefix"], only["tier"], only["id"]) == ("x/", "Bulk", job_id(one.spec()))
        store.create(two.spec(), "Standard", 3, _objs([("GLACIER", 1, COLD)]), created_at=2.0)
        with pytest.raises(UsageError, match="holds 2 restore jobs"):
            store.spec()
        spec = store.spec(job_id(two.spec()))
        assert spec is not None
        assert spec["keys"] == ["k"]
        assert len(store.load(job_id(one.spec()))) == len(store.load(job_id(two.spec()))) == 1
        store.delete(job_id(one.spec()))
        assert store.load(job_id(one.spec())) == []
        assert [j["id"] for j in store.jobs()] == [job_id(two.spec())]
    finally:
        store.close()


async def test_status_of_a_job_not_in_the_state_file(work_dir: str) -> None:
    path = os.path.join(work_dir, "s.sqlite")
    RestoreStore(path).close()
    job = _job(
        Session(CONFIG, FakeClock()), RestoreOptions(bucket="b", prefix="y/", state_path=path)
    )
    with pytest.raises(UsageError, match="no restore job for s3://b/y/"):
        await job.status()


# -- one object at a time, in virtual time (a fake session) ---------------------


class FakeS3:
    """Just enough of :class:`fastxfer.session.Session` for a restore job, in virtual time.

    ``objects``: key -> (storage class, seconds a restore takes).  ``refuse``:
    key -> the error its RestoreObject gets.  ``list_errors``: raised by the
    next LIST requests, in order.
    """

    def __init__(
        self,
        clock: FakeClock,
        objects: dict[str, tuple[str, float]],
        *,
        refuse: dict[str, FastxferError] | None = None,
    ) -> None:
        self.config = CONFIG
        self.clock = clock
        self.objects = objects
        self.refuse = refuse or {}
        self.list_errors: list[Exception] = []
        self.ready_at: dict[str, float] = {}
        self.sent: Counter[str] = Counter()

    def _status(self, key: str) -> dict[str, Any] | None:
        ready = self.ready_at.get(key)
        if ready is None:
            return None
        if self.clock.monotonic() < ready:
            return {"IsRestoreInProgress": True}
        expiry = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
        return {"IsRestoreInProgress": False, "RestoreExpiryDate": expiry}

    def _item(self, key: str) -> dict[str, Any]:
        item: dict[str, Any] = {"Key": key, "Size": 10, "StorageClass": self.objects[key][0]}
        if (rs := self._status(key)) is not None:
            item["RestoreStatus"] = rs
        return item

    async def request(
        self,
        op: str,
        *,
        bucket: str,
        key: str | None = None,
        counts: Counter[str] | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        self.sent[op] += 1
        if counts is not None:
            counts[op] += 1
        await asyncio.sleep(0)
        if op == "restore_object":
            assert key is not None
            if key in self.refuse:
                raise self.refuse[key]
            if key in self.ready_at and self.clock.monotonic() < self.ready_at[key]:
                raise S3Error("in progress", code="RestoreAlreadyInProgress")
            self.ready_at.setdefault(key, self.clock.monotonic() + self.objects[key][1])
            return {}
        if op == "list_objects_v2":
            if self.list_errors:
                raise self.list_errors.pop(0)
            keys = sorted(
                k
                for k in self.objects
                if k.startswith(kw.get("Prefix", "")) and k > kw.get("StartAfter", "")
            )
            return {"Contents": [self._item(k) for k in keys[: kw.get("MaxKeys", 1000)]]}
        raise AssertionError(f"unexpected {op}")

    async def pages(
        self, op: str, *, bucket: str, what: str = "LIST", counts: Any = None, **kw: Any
    ) -> AsyncIterator[dict[str, Any]]:
        yield await self.request(op, bucket=bucket, counts=counts, **kw)

    async def head(self, bucket: str, key: str, *, counts: Any = None) -> ObjectInfo:
        self.sent["head_object"] += 1
        if counts is not None:
            counts["head_object"] += 1
        await asyncio.sleep(0)
        return ObjectInfo.from_listing(bucket, self._item(key))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def keys_opts(work_dir: str, *keys: str, **kw: Any) -> RestoreOptions:
    return RestoreOptions(
        bucket="b", keys=keys, state_path=os.path.join(work_dir, "state.sqlite"), **kw
    )


async def test_wait_readable_polls_on_the_injected_clock(work_dir: str, clock: FakeClock) -> None:
    """GLACIER Standard is polled hourly: an object that takes 2 h is handed out at the
    2 h poll, one that takes 5 h at the 5 h poll, the online one at once."""
    s3 = FakeS3(
        clock,
        {"a": ("GLACIER", 5 * 3600), "b": ("GLACIER", 2 * 3600), "c": ("STANDARD", 0)},
    )
    async with _job(s3, keys_opts(work_dir, "a", "b", "c")) as job:
        assert s3.sent["restore_object"] == 2  # the batch is requested on entry
        assert (await job.wait_readable("c")).state == "readable"
        assert clock.monotonic() == 0
        assert job.eta("a") == pytest.approx(5 * 3600)  # the tier's typical time
        assert job.eta("c") == 0
        b = await job.wait_readable("b")
        assert (b.state, clock.monotonic()) == ("restored", 2 * 3600)
        assert b.expiry == datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).timestamp()
        assert job.object("a").state == "restoring"  # the rest goes on
        assert job.eta("a") == pytest.approx(3 * 3600)
        await job.wait_readable("a")
        assert clock.monotonic() == 5 * 3600
        report = job.report()
    assert report.polls == 6  # at 0, 1, 2, 3, 4, 5 h
    assert report.requests.list == s3.sent["list_objects_v2"] == 6
    assert report.requests.restore == 2
    assert report.requests.head == 3  # the inventory

    # Entered again (a rerun): nothing is requested, nothing polled.
    s3.sent.clear()
    async with _job(s3, keys_opts(work_dir, "a", "b", "c")) as job:
        for key in "abc":
            await job.wait_readable(key)
        assert job.report().resumed
    assert s3.sent == Counter()


async def test_price_first_then_the_batch_with_one_inventory(
    work_dir: str, clock: FakeClock
) -> None:
    s3 = FakeS3(clock, {"a": ("GLACIER", 60), "b": ("DEEP_ARCHIVE", 60), "c": ("STANDARD", 0)})
    job = RestoreJob(
        cast("Session", s3),
        keys_opts(work_dir, "a", "b"),
        start_download=_no_download,
        prices=PRICES,
    )
    est = await job.estimate()
    assert (est.requests.restore, est.objects_readable) == (2, 0)
    assert not os.path.exists(job.state_path)  # pricing writes nothing
    async with job:
        await job.wait_readable("b")
        with pytest.raises(RuntimeError, match="not in `async with`"):
            await job.run()
    assert s3.sent["head_object"] == 2  # the estimate's inventory was reused
    assert s3.sent["restore_object"] == 2


async def test_concurrent_waiters_and_a_refused_restore(work_dir: str, clock: FakeClock) -> None:
    s3 = FakeS3(
        clock,
        {"a": ("DEEP_ARCHIVE", 7200), "b": ("GLACIER", 3600), "d": ("GLACIER", 60)},
        refuse={"d": AccessDenied("RestoreObject s3://b/d: access denied", code="AccessDenied")},
    )
    opts = keys_opts(work_dir, "a", "b", "d", poll_interval=600)
    async with _job(s3, opts) as job:
        with pytest.raises(AccessDenied, match="access denied"):
            await job.wait_readable("d")
        assert job.eta("d") is None
        order: list[str] = []

        async def wait(key: str) -> None:
            await job.wait_readable(key)
            order.append(f"{key}@{clock.monotonic():.0f}")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(wait("a"))
            tg.create_task(wait("b"))
        with pytest.raises(UsageError, match="not part of this restore job"):
            await job.wait_readable("zz")
    assert order == ["b@3600", "a@7200"]
    assert s3.sent["restore_object"] == 3


async def test_polling_failures(work_dir: str, clock: FakeClock) -> None:
    """Passing S3 errors are retried at the next poll; a bad-credentials error stops the
    job and reaches the waiter (and is not raised twice)."""
    s3 = FakeS3(clock, {"a": ("GLACIER", 7200), "b": ("GLACIER", 9000)})
    s3.list_errors = [S3Error("LIST failed: 500", code="InternalError")] * 2
    async with _job(s3, keys_opts(work_dir, "a", "b", poll_interval=3600)) as job:
        await job.wait_readable("a")  # polls at 0 and 1 h failed, the 2 h poll sees it
        assert clock.monotonic() == 2 * 3600
        assert job.report().polls == 3
        s3.list_errors = [BadCredentials("the server rejected the credentials")]
        with pytest.raises(BadCredentials):
            await job.wait_readable("b")
        with pytest.raises(BadCredentials):  # every later waiter learns it too
            await job.wait_readable("b")


async def test_undelivered_polling_failure_is_raised_on_exit(
    work_dir: str, clock: FakeClock
) -> None:
    s3 = FakeS3(clock, {"a": ("GLACIER", 7200)})
    s3.list_errors = [BadCredentials("the server rejected the credentials")]
    with pytest.raises(BadCredentials):
        async with _job(s3, keys_opts(work_dir, "a")):
            await clock.sleep(10)


async def test_cancelled_waiter_leaves_the_job_running_and_exit_stops_polling(
    work_dir: str, clock: FakeClock
) -> None:
    s3 = FakeS3(clock, {"a": ("GLACIER", 3 * 3600), "b": ("GLACIER", 3600)})
    async with _job(s3, keys_opts(work_dir, "a", "b")) as job:
        waiter = asyncio.create_task(job.wait_readable("a"))
        await job.wait_readable("b")
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert job.object("a").state == "restoring"
        polls = [t for t in asyncio.all_tasks() if "restore-poll" in t.get_name()]
        assert len(polls) == 1
    assert polls[0].done()  # cancelled and awaited by __aexit__
    assert [t for t in asyncio.all_tasks() if "restore-poll" in t.get_name()] == []


async def test_wait_readable_needs_the_context(work_dir: str, clock: FakeClock) -> None:
    job = _job(FakeS3(clock, {"a": ("GLACIER", 1)}), keys_opts(work_dir, "a"))
    with pytest.raises(RuntimeError, match="async with job"):
        await job.wait_readable("a")
    with pytest.raises(UsageError, match=r"download_dir is for RestoreJob\.run"):
        async with _job(
            FakeS3(clock, {"a": ("GLACIER", 1)}), keys_opts(work_dir, "a", download_dir=work_dir)
        ):
            pass


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
        report = await tm.restore_job(opts).run()
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
        again = await tm.restore_job(opts).run()
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
        report = await tm.restore_job(opts).run()
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
        task = asyncio.create_task(tm.restore_job(opts).run())
        deadline = time.monotonic() + 10
        while bucket_counts(server, moto_bucket).get("ListObjectsV2", 0) < 3:  # polling
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert bucket_counts(server, moto_bucket).get("GetObject", 0) == 0  # still waiting

    async with TransferManager(moto_config()) as tm:
        report = await tm.restore_job(opts).run()
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
        report = await tm.restore_job(opts).run()
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
            await tm.restore_job(opts).run()
    assert server.restore_requests(moto_bucket, "cold") == 0  # rejected before sending


async def test_wait_readable_on_the_realistic_server(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    """The duplicity shape: one batch, then one object handed out while the rest thaw."""
    objects = {
        "w/fast": (body("fast", 3000), "DEEP_ARCHIVE"),
        "w/slow": (body("slow"), "GLACIER"),
        "w/online": (body("online"), "STANDARD"),
    }
    put_objects(moto_s3, moto_bucket, objects)
    server.set_restore_delay(60.0)
    moto_s3.restore_object(Bucket=moto_bucket, Key="w/slow", RestoreRequest={"Days": 1})
    server.set_restore_delay(2.0)
    opts = RestoreOptions(
        bucket=moto_bucket,
        keys=("w/fast", "w/slow", "w/online"),
        tier=RestoreTier.BULK,
        poll_interval=0.2,
        state_path=os.path.join(work_dir, "job.sqlite"),
    )
    dest = os.path.join(work_dir, "fast")
    async with TransferManager(moto_config()) as tm:
        async with tm.restore_job(opts) as job:
            assert server.restore_requests(moto_bucket, "w/fast") == 1  # sent on entry
            assert (await job.wait_readable("w/online")).state == "readable"
            with pytest.raises(ColdObject):  # not yet
                await tm.download(moto_bucket, "w/fast", dest)
            fast = await asyncio.wait_for(job.wait_readable("w/fast"), 20)
            assert fast.state == "restored"
            assert fast.expiry is not None
            assert fast.expiry > time.time()
            assert job.object("w/slow").state == "restoring"  # still thawing
            assert job.eta("w/slow") is None  # someone else requested it: unknown
            await tm.download(moto_bucket, "w/fast", dest)
            assert job.report().poll_mode == "list"
        with open(dest, "rb") as f:
            assert f.read() == objects["w/fast"][0]

        async with tm.restore_job(opts) as job:  # a rerun: from the state file
            assert (await job.wait_readable("w/fast")).state == "restored"
            assert job.report().requests.restore == 0
    assert server.restore_requests(moto_bucket, "w/fast") == 1
    assert server.restore_requests(moto_bucket, "w/slow") == 1  # ours: none
    assert server.restore_requests(moto_bucket, "w/online") == 0


async def test_poll_interval_runs_on_the_managers_clock(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    """The clock given to the TransferManager paces the poller: after the restore has
    completed for real, the job sees it only when the virtual poll interval has passed."""
    server.set_restore_delay(1.0)
    put_objects(moto_s3, moto_bucket, {"i/a": (body("a"), "GLACIER")})
    clock = FakeClock(auto_advance=False)
    opts = RestoreOptions(
        bucket=moto_bucket,
        keys=("i/a",),
        tier=RestoreTier.EXPEDITED,  # polled every minute
        state_path=os.path.join(work_dir, "job.sqlite"),
    )
    async with TransferManager(moto_config(), clock=clock) as tm, tm.restore_job(opts) as job:
        waiter = asyncio.create_task(job.wait_readable("i/a"))
        deadline = time.monotonic() + 10
        while (done_at := server.restore_completed_at(moto_bucket, "i/a")) is None or (
            time.monotonic() < done_at + 0.3
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert not waiter.done()
        assert bucket_counts(server, moto_bucket).get("ListObjectsV2") == 1  # at t=0
        await clock.advance(59)
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await clock.advance(1)
        status = await asyncio.wait_for(waiter, 10)
        assert status.state == "restored"
        assert job.report().polls == 2
    assert bucket_counts(server, moto_bucket).get("ListObjectsV2") == 2


async def test_dry_run_counts_equal_the_run(
    server: RealisticMotoServer,
    moto_bucket: str,
    moto_s3: Any,
    moto_config: Callable[..., TransferConfig],
    work_dir: str,
) -> None:
    """Ranged download of a 12 MiB object (5 MiB ranges): the estimate's GET and HEAD
    counts are what the run sends."""
    server.set_restore_delay(0.3)
    put_objects(
        moto_s3,
        moto_bucket,
        {"r/big": (body("big", 12 * MiB), "GLACIER"), "r/small": (body("small"), "GLACIER")},
    )
    cfg = moto_config(multipart_threshold=5 * MiB, part_size=5 * MiB)
    opts = RestoreOptions(
        bucket=moto_bucket,
        prefix="r/",
        poll_interval=0.2,
        download_dir=os.path.join(work_dir, "out"),
        state_path=os.path.join(work_dir, "job.sqlite"),
    )
    async with TransferManager(cfg) as tm:
        est = await tm.restore_job(opts, prices=PRICES).estimate()
        report = await tm.restore_job(opts).run()
    assert est.requests.get == download_get_count(12 * MiB, cfg) + 1 == 3 + 1
    assert report.downloaded == 2
    assert report.requests.get == est.requests.get
    assert report.requests.restore == est.requests.restore == 2
    download_heads = report.requests.head  # the inventory was a LIST
    assert download_heads == est.requests.head - est.inventory.head == 1


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
