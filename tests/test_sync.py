"""sync against rclone serve s3: only what changed moves; --delete only after success."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from fastxfer import TransferConfig, TransferManager
from fastxfer.filters import Filters
from fastxfer.sync import LocalDir, S3Prefix, sync


def tree(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def read_tree(root: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root).replace(os.sep, "/")] = f.read()
    return out


def age(root: str, rel: str, seconds: float) -> None:
    """Make a file look ``seconds`` older (as if written before the last sync)."""
    p = os.path.join(root, *rel.split("/"))
    st = os.stat(p)
    t = st.st_mtime_ns - int(seconds * 1e9)
    os.utime(p, ns=(t, t))


async def test_local_to_s3_sends_only_what_changed_and_deletes_after(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    files = {f"d{i % 3}/f{i}.bin": os.urandom(100 + i) for i in range(30)}
    tree(src, files)
    for rel in files:
        age(src, rel, 10)
    dst = S3Prefix(bucket, "backup/")
    async with TransferManager(make_config()) as tm:
        first = await sync(tm, LocalDir(src), dst)
        assert first.copied == 30
        assert first.ok
        # Two files change, one goes, one is new.
        tree(src, {"d0/f0.bin": b"changed size", "new.txt": b"new"})
        with open(os.path.join(src, "d1", "f1.bin"), "r+b") as f:  # same size, newer
            f.write(b"X")
        os.unlink(os.path.join(src, "d2", "f2.bin"))
        plan = await sync(tm, LocalDir(src), dst, delete=True, dry_run=True)
        assert sorted(s.rel for s, _ in plan.plan.copy) == ["d0/f0.bin", "d1/f1.bin", "new.txt"]
        assert [d.rel for d in plan.plan.delete] == ["d2/f2.bin"]
        assert plan.copied == 0  # a dry run changes nothing
        second = await sync(tm, LocalDir(src), dst, delete=True)
    assert second.copied == 3
    assert second.plan.unchanged == 27
    assert second.deleted == 1
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"backup/" + rel for rel in read_tree(src)}
    assert s3.get_object(Bucket=bucket, Key="backup/d1/f1.bin")["Body"].read()[:1] == b"X"


async def test_s3_to_local_round_trip_is_then_unchanged(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str
) -> None:
    src = os.path.join(work_dir, "src")
    files = {"a.txt": b"a" * 10, "sub/b.bin": os.urandom(3000), "sub/deep/c": b""}
    tree(src, files)
    out = os.path.join(work_dir, "out")
    async with TransferManager(make_config()) as tm:
        await sync(tm, LocalDir(src), S3Prefix(bucket, "p/"))
        down = await sync(tm, S3Prefix(bucket, "p/"), LocalDir(out))
        assert down.copied == 3
        assert read_tree(out) == files
        # Downloads carried the mtime: nothing to do the second time.
        again = await sync(tm, S3Prefix(bucket, "p/"), LocalDir(out))
        assert again.copied == 0
        assert again.plan.unchanged == 3
        # A local extra file goes with --delete.
        tree(out, {"extra": b"x"})
        pruned = await sync(tm, S3Prefix(bucket, "p/"), LocalDir(out), delete=True)
    assert pruned.deleted == 1
    assert read_tree(out) == files


async def test_filters_apply_and_excluded_files_are_neither_sent_nor_deleted(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    tree(src, {"keep.txt": b"k", "skip.tmp": b"s", "cache/x": b"c"})
    s3.put_object(Bucket=bucket, Key="p/old.txt", Body=b"old")
    s3.put_object(Bucket=bucket, Key="p/remote.tmp", Body=b"excluded, so kept")
    flt = Filters.parse(["--exclude", "*.tmp", "--exclude", "cache/"])
    async with TransferManager(make_config()) as tm:
        r = await sync(tm, LocalDir(src), S3Prefix(bucket, "p/"), delete=True, filters=flt)
    assert r.ok
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"p/keep.txt", "p/remote.tmp"}


async def test_nothing_is_deleted_when_a_copy_failed(
    make_config: Callable[..., TransferConfig], bucket: str, work_dir: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="p/sub/b", Body=b"b")
    s3.put_object(Bucket=bucket, Key="p/a", Body=b"a")
    out = os.path.join(work_dir, "out")
    # "sub" is a file here, so sub/b cannot be written; "extra" would be deleted.
    tree(out, {"sub": b"in the way", "extra": b"x"})
    async with TransferManager(make_config()) as tm:
        r = await sync(tm, S3Prefix(bucket, "p/"), LocalDir(out), delete=True)
    assert [p for p, _ in r.failed] == ["sub/b"]
    assert r.delete_skipped
    assert r.deleted == 0
    assert read_tree(out) == {"a": b"a", "sub": b"in the way", "extra": b"x"}


async def test_unsafe_keys_are_reported_not_merged(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, work_dir: str, moto_s3: Any
) -> None:
    for key in ("p/a/dbl.txt", "p/a//dbl.txt", "p/x/../y", "p/ok"):
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=key.encode())
    out = os.path.join(work_dir, "out")
    async with TransferManager(moto_config()) as tm:
        r = await sync(tm, S3Prefix(moto_bucket, "p/"), LocalDir(out))
    assert not r.ok
    assert sorted(k for k, _ in r.plan.skipped) == ["p/a//dbl.txt", "p/x/../y"]
    assert read_tree(out) == {"a/dbl.txt": b"p/a/dbl.txt", "ok": b"p/ok"}


async def test_s3_to_s3_copies_on_the_server(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any
) -> None:
    for i in range(5):
        moto_s3.put_object(Bucket=moto_bucket, Key=f"src/{i}", Body=str(i).encode())
    async with TransferManager(moto_config()) as tm:
        first = await sync(tm, S3Prefix(moto_bucket, "src/"), S3Prefix(moto_bucket, "dst/"))
        again = await sync(tm, S3Prefix(moto_bucket, "src/"), S3Prefix(moto_bucket, "dst/"))
    assert first.copied == 5
    assert again.copied == 0
    assert moto_s3.get_object(Bucket=moto_bucket, Key="dst/3")["Body"].read() == b"3"


@pytest.mark.parametrize("server", ["rclone", "moto"])
async def test_the_ranged_listing_equals_the_flat_one(
    server: str, request: pytest.FixtureRequest
) -> None:
    from fastxfer.manager import RANGES

    if server == "rclone":
        bucket, s3 = request.getfixturevalue("bucket"), request.getfixturevalue("s3")
        cfg = request.getfixturevalue("make_config")()
    else:
        bucket, s3 = request.getfixturevalue("moto_bucket"), request.getfixturevalue("moto_s3")
        cfg = request.getfixturevalue("moto_config")()
    keys = [f"p/d{i:02d}/{j}" for i in range(3 * RANGES) for j in range(3)]
    # Objects right under p/ that sort between and just before the "directories":
    # "p/d03" and "p/d03-x" sort before "p/d03/...", "p/d03x" after it.
    keys += ["p/top.txt", "p/d03-x", "p/d03x", "p/d05/deeper/z", "p/zz", "q/outside"]
    if server == "moto":
        keys.append("p/d03")  # rclone's disk cannot hold a file and a folder of one name
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    async with TransferManager(cfg) as tm:
        if server == "moto":
            request.getfixturevalue("moto_server").reset_counts()
        tree = [o.key for o in await tm.list_tree(bucket, "p/")]
        if server == "moto":
            lists = request.getfixturevalue("moto_server").counts()["ListObjectsV2"]
            # One delimited LIST and one per range, not one per directory (24 of them).
            assert lists == 1 + RANGES
        flat = [o.key async for o in tm.list_objects(bucket, "p/")]
    assert sorted(tree) == flat == sorted(k for k in keys if k.startswith("p/"))
    assert len(tree) == len(set(tree))  # no key from two ranges


async def test_the_concurrent_listing_equals_the_flat_one(
    make_config: Callable[..., TransferConfig], bucket: str, s3: Any
) -> None:
    for k in ("p/top.txt", "p/a/1", "p/a/b/2", "p/c/3", "q/outside"):
        s3.put_object(Bucket=bucket, Key=k, Body=b"x")
    async with TransferManager(make_config()) as tm:
        tree_keys = sorted(o.key for o in await tm.list_tree(bucket, "p/"))
        flat = sorted([o.key async for o in tm.list_objects(bucket, "p/")])
    assert tree_keys == flat
    assert "q/outside" not in tree_keys
    assert "p/a/b/2" in tree_keys
