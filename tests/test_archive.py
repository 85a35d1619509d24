"""Archiving: duplicity chains, what moves, costs, lifecycle rules; moves on moto's server."""

from __future__ import annotations

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
from fastxfer.session import ObjectInfo

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
    plan = plan_archive([info("a", size=2**40, days=200)], "DEEP_ARCHIVE", older_than_days=1)
    cost = estimate_archive(plan, prices, delete_after_days=120)
    assert cost.copy_requests == 2 + 1024  # a multipart copy of 1 TiB in parts of 1 GiB
    assert cost.minimum_days == 180
    per_gb = prices.storage_per_gb_month
    assert cost.monthly_saving == pytest.approx(
        1024 * (per_gb["STANDARD"] - per_gb["DEEP_ARCHIVE"])
    )
    assert cost.early_deletion_charge == pytest.approx(1024 * per_gb["DEEP_ARCHIVE"] * 60 / 30)
    assert estimate_archive(plan, prices, delete_after_days=365).early_deletion_charge == 0


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
    assert expiration_days(merged, "logs/x") == 30
    assert expiration_days(merged, "p/x") is None


async def test_archive_on_the_server_moves_older_chains_and_reads_no_data(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any
) -> None:
    for n in NAMES:
        moto_s3.put_object(Bucket=moto_bucket, Key="bk/" + n, Body=n.encode())
    async with TransferManager(moto_config()) as tm:
        listing = [o async for o in tm.list_objects(moto_bucket, "bk/")]
        plan = plan_archive(listing, "DEEP_ARCHIVE", keep_full=1)
        result = await run_archive(tm, plan)
        again = plan_archive(
            [o async for o in tm.list_objects(moto_bucket, "bk/")], "DEEP_ARCHIVE", keep_full=1
        )
    assert result.moved == 5
    assert result.failed == []
    assert "get_object" not in result.requests  # no data read
    assert result.requests["copy_object"] == 5
    assert again.move == []  # a rerun is a no-op
    assert again.already == 5
    for n in NAMES:
        sc = moto_s3.head_object(Bucket=moto_bucket, Key="bk/" + n).get("StorageClass", "STANDARD")
        is_old_volume = ".difftar" in n and T5 not in n
        assert sc == ("DEEP_ARCHIVE" if is_old_volume else "STANDARD"), n
