"""Archiving: duplicity chains, what moves, costs, lifecycle rules; moves on moto's server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fastxfer import InvalidConfig, TransferConfig, TransferManager
from fastxfer.archive import (
    ArchivePrices,
    duplicity_chains,
    estimate_archive,
    expiration_days,
    lifecycle_rules,
    merge_rules,
    parse_duplicity_name,
    plan_archive,
    run_archive,
)
from fastxfer.objectinfo import ObjectInfo
from fastxfer.planning import copy_part_size

T1, T2, T3, T4, T5 = (f"2026010{i}T000000Z" for i in range(1, 6))

NAMES = [
    # chain 1: full T1, inc T1->T2
    f"duplicity-full.{T1}.vol1.difftar.gpg",
    f"duplicity-full.{T1}.vol2.difftar.gpg",
    f"duplicity-full.{T1}.manifest.gpg",
    f"duplicity-full-signatures.{T1}.sigtar.gpg",
    f"duplicity-inc.{T1}.to.{T2}.vol1.difftar.gpg",
    f"duplicity-inc.{T1}.to.{T2}.manifest.gpg",
    f"duplicity-new-signatures.{T1}.to.{T2}.sigtar.gpg",
    # chain 2: full T3, inc T3->T4
    f"archive/duplicity-full.{T3}.vol1.difftar.gz",  # --file-prefix-archive archive/
    f"duplicity-full.{T3}.manifest",
    f"duplicity-full-signatures.{T3}.sigtar.gz",
    f"archive/duplicity-inc.{T3}.to.{T4}.vol1.difftar.gz",
    f"duplicity-inc.{T3}.to.{T4}.manifest",
    # chain 3 (newest): full T5
    f"duplicity-full.{T5}.vol1.difftar.gpg",
    f"duplicity-full.{T5}.manifest.gpg",
    f"duplicity-full.{T5}.jsonstat",
]


def info(key: str, size: int = 100, storage_class: str = "STANDARD", days: float = 0) -> ObjectInfo:
    return ObjectInfo(
        bucket="b",
        key=key,
        size=size,
        etag='"e"',
        last_modified=datetime(2026, 3, 1, tzinfo=UTC) - timedelta(days=days),
        storage_class=storage_class,
        metadata={},
    )


def test_names_are_parsed_with_any_file_prefix() -> None:
    f = parse_duplicity_name(f"p/archive/duplicity-inc.{T1}.to.{T2}.vol12.difftar.gpg")
    assert f is not None
    assert (f.start, f.end, f.volume) == (T1, T2, 12)
    m = parse_duplicity_name(f"p/duplicity-full.{T1}.manifest.gpg")
    assert m is not None
    assert (m.start, m.end, m.volume) == (None, T1, None)
    assert parse_duplicity_name("p/notes.txt") is None


def test_chains_group_fulls_and_their_incrementals() -> None:
    chains, orphans = duplicity_chains(info("p/" + n) for n in NAMES)
    assert [c.full_time for c in chains] == [T1, T3, T5]
    assert [c.end_time for c in chains] == [T2, T4, T5]
    assert len(chains[0].volumes) == 3
    assert len(chains[0].metadata) == 4
    assert orphans == []
    lone, orphans = duplicity_chains([info(f"duplicity-inc.{T2}.to.{T3}.vol1.difftar")])
    assert lone == []
    assert len(orphans) == 1  # an incremental without its full is left alone


def test_an_interrupted_full_is_not_a_chain_and_never_shields_older_ones() -> None:
    """A full whose manifest never landed (a killed run) must not count as the newest
    backup: keep_full=1 keeps the newest COMPLETE chain, and moves nothing of T5."""
    names = [n for n in NAMES if T5 not in n] + [f"duplicity-full.{T5}.vol1.difftar.gpg"]
    chains, orphans = duplicity_chains(info("p/" + n) for n in names)
    assert [c.full_time for c in chains] == [T1, T3]
    assert [o.key for o in orphans] == [f"p/duplicity-full.{T5}.vol1.difftar.gpg"]
    plan = plan_archive([info("p/" + n) for n in names], "DEEP_ARCHIVE", keep_full=1)
    assert [c.full_time for c in plan.kept_chains] == [T3]
    assert all(T1 in o.key for o in plan.move)


def test_keep_full_moves_only_older_chains_volumes() -> None:
    objects = [info("p/" + n) for n in NAMES]
    objects[0] = info(objects[0].key, storage_class="DEEP_ARCHIVE")  # moved before
    plan = plan_archive(objects, "DEEP_ARCHIVE", keep_full=1)
    moved = {o.key.removeprefix("p/") for o in plan.move}
    assert moved == {
        f"duplicity-full.{T1}.vol2.difftar.gpg",
        f"duplicity-inc.{T1}.to.{T2}.vol1.difftar.gpg",
        f"archive/duplicity-full.{T3}.vol1.difftar.gz",
        f"archive/duplicity-inc.{T3}.to.{T4}.vol1.difftar.gz",
    }
    assert plan.already == 1
    assert [c.full_time for c in plan.kept_chains] == [T5]
    with pytest.raises(InvalidConfig):
        plan_archive(objects, "DEEP_ARCHIVE", keep_full=0)


def test_older_than_for_plain_prefixes_spares_duplicity_metadata() -> None:
    objects = [info("x/old.bin", days=100), info("x/new.bin", days=10)]
    objects.append(info(f"x/duplicity-full.{T1}.manifest", days=100))
    plan = plan_archive(
        objects, "GLACIER", older_than_days=90, now=datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert [o.key for o in plan.move] == ["x/old.bin"]


def test_costs_saving_and_early_deletion() -> None:
    prices = ArchivePrices.load()
    cfg = TransferConfig(max_concurrency=32)
    moment = datetime(2026, 3, 1, tzinfo=UTC)
    big = info("a", size=2**40, days=200)
    plan = plan_archive([big], "DEEP_ARCHIVE", older_than_days=1, now=moment)
    cost = estimate_archive(plan, prices, cfg, now=moment)
    parts = -(-(2**40) // copy_part_size(2**40, cfg))
    assert cost.copy_requests == 1 + 2 + parts  # HEAD, create, parts, complete
    assert cost.minimum_days == 180
    per_gb = prices.storage_per_gb_month
    saving = 1024 * (per_gb["STANDARD"] - per_gb["DEEP_ARCHIVE"])
    assert cost.monthly_saving == pytest.approx(saving)
    assert cost.early_deletion_charge == 0
    # Retention counted from the backup's time: 200 days old, deleted at 300 -> 100 more days.
    early = estimate_archive(plan, prices, cfg, delete_after_days=300, now=moment)
    assert early.early_deletion_charge == pytest.approx(1024 * per_gb["DEEP_ARCHIVE"] * 80 / 30)
    assert (
        estimate_archive(plan, prices, cfg, delete_after_days=400, now=moment).early_deletion_charge
        == 0
    )
    # A lifecycle Expiration restarts with the copy: 100 days after the move.
    exp = estimate_archive(plan, prices, cfg, expiration={"a": 100}, now=moment)
    assert exp.early_deletion_charge == pytest.approx(1024 * per_gb["DEEP_ARCHIVE"] * 80 / 30)


def test_lifecycle_rules_fit_the_layout_and_merge() -> None:
    with pytest.raises(InvalidConfig, match="file-prefix-archive"):
        lifecycle_rules(
            "p/", archive_prefix=None, transition_days=30, target="GLACIER", abort_days=7
        )
    new = lifecycle_rules(
        "p/", archive_prefix="archive/", transition_days=30, target="GLACIER", abort_days=7
    )
    assert new[1]["Filter"] == {"Prefix": "p/archive/"}  # volumes only
    existing = [
        {
            "ID": "keep-mine",
            "Status": "Enabled",
            "Filter": {"Prefix": "logs/"},
            "Expiration": {"Days": 30},
        },
        {"ID": new[0]["ID"], "Status": "Disabled", "Filter": {"Prefix": "p/"}},
    ]
    merged = merge_rules(existing, new)
    assert [r["ID"] for r in merged] == ["keep-mine", new[0]["ID"], new[1]["ID"]]
    assert expiration_days(merged, ["logs/x", "p/x"]) == {"logs/x": 30}
    # A rule on a deeper prefix (the layout `lifecycle` recommends) applies to its keys.
    deeper = [
        {
            "ID": "v",
            "Status": "Enabled",
            "Filter": {"Prefix": "p/archive/"},
            "Expiration": {"Days": 60},
        }
    ]
    assert expiration_days(deeper, ["p/archive/v1", "p/man"]) == {"p/archive/v1": 60}


async def test_archive_on_the_server_moves_older_chains_and_reads_no_data(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any
) -> None:
    big = f"duplicity-full.{T1}.vol2.difftar.gpg"
    for n in NAMES:
        body = os.urandom(12 * 1024 * 1024) if n == big else n.encode()
        moto_s3.put_object(Bucket=moto_bucket, Key="bk/" + n, Body=body)
    before = moto_s3.get_object(Bucket=moto_bucket, Key="bk/" + big)["Body"].read()
    # A small single-copy limit: the big volume goes by UploadPartCopy.
    cfg = moto_config(copy_threshold=5 * 1024 * 1024, part_size=5 * 1024 * 1024)
    async with TransferManager(cfg) as tm:
        listing = [o async for o in tm.list_objects(moto_bucket, "bk/")]
        plan = plan_archive(listing, "DEEP_ARCHIVE", keep_full=1)
        estimate = estimate_archive(plan, ArchivePrices.load(), cfg)
        result = await run_archive(tm, plan)
        again = plan_archive(
            [o async for o in tm.list_objects(moto_bucket, "bk/")], "DEEP_ARCHIVE", keep_full=1
        )
    assert result.moved == 5
    assert result.failed == []
    assert "get_object" not in result.requests  # no data read
    assert result.requests["copy_object"] == 4
    assert result.requests["upload_part_copy"] >= 2
    assert sum(result.requests.values()) == estimate.copy_requests  # the dry run's count
    # The big one kept its bytes (restore it on moto to read it back).
    moto_s3.restore_object(Bucket=moto_bucket, Key="bk/" + big, RestoreRequest={"Days": 1})
    assert again.move == []  # a rerun is a no-op
    assert again.already == 5
    for n in NAMES:
        sc = moto_s3.head_object(Bucket=moto_bucket, Key="bk/" + n).get("StorageClass", "STANDARD")
        is_old_volume = ".difftar" in n and T5 not in n
        assert sc == ("DEEP_ARCHIVE" if is_old_volume else "STANDARD"), n
    deadline = time.monotonic() + 30
    while True:
        head = moto_s3.head_object(Bucket=moto_bucket, Key="bk/" + big)
        if 'ongoing-request="false"' in head.get("Restore", ""):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert moto_s3.get_object(Bucket=moto_bucket, Key="bk/" + big)["Body"].read() == before
