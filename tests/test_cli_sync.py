"""`fastxfer sync` and filters on `cp -r`, as a user runs them (real processes, rclone serve s3)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from test_cli import run_cli
from test_cli_rm_mv import meta
from test_sync import age, read_tree, tree

from fastxfer.cli import build_parser
from fastxfer.cli.common import filters_from_args
from fastxfer.localserver import LocalS3Server


def keys(s3: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            out[item["Key"][len(prefix) :]] = body
    return out


def sync_json(srv: LocalS3Server, *args: str) -> tuple[int, dict[str, Any]]:
    r = run_cli(srv, "sync", *args, "--json")
    assert r.stdout, r.stderr
    return r.returncode, json.loads(r.stdout)


def test_sync_up_with_filters_then_only_changes_then_delete(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    files = {
        "a.txt": b"alpha",
        "d/b.bin": os.urandom(3000),
        "d/e/c.bin": os.urandom(100),
        "x.tmp": b"temp",
        "keep.tmp": b"kept",
        "cache/big.bin": os.urandom(5000),
        "d/cache/y": b"y",
    }
    tree(src, files)
    for rel in files:
        age(src, rel, 30)
    url = f"s3://{bucket}/nightly"
    # Order matters: keep.tmp is included by the first rule before *.tmp excludes it.
    flt = ["--include", "keep.tmp", "--exclude", "*.tmp", "--exclude", "cache/"]
    code, first = sync_json(rclone_server, src, url, *flt)
    assert code == 0, first
    assert sorted(t["path"] for t in first["to_copy"]) == [
        "a.txt",
        "d/b.bin",
        "d/e/c.bin",
        "keep.tmp",
    ]
    assert first["requests"] == {"put_object": 4}
    stored = keys(s3, bucket, "nightly/")
    assert stored == {
        k: v for k, v in files.items() if k in ("a.txt", "d/b.bin", "d/e/c.bin", "keep.tmp")
    }

    # Unchanged: nothing is sent, not one PUT.
    code, again = sync_json(rclone_server, src, url, *flt)
    assert code == 0
    assert (again["copied"], again["unchanged"], again["requests"]) == (0, 4, {})

    # One file changes, one goes; an excluded file on the server is neither deleted nor sent.
    s3.put_object(Bucket=bucket, Key="nightly/cache/old", Body=b"excluded: stays")
    tree(src, {"a.txt": b"alpha, longer now"})
    os.unlink(os.path.join(src, "d", "e", "c.bin"))
    dry = run_cli(rclone_server, "sync", src, url, *flt, "--delete", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "would copy: a.txt (17 B, changed)",
        "would delete: d/e/c.bin (100 B)",
        "dry run: would copy 1 files (17 B, 17 bytes), delete 1 (100 B); 2 unchanged",
    ]
    assert keys(s3, bucket, "nightly/")["d/e/c.bin"] == files["d/e/c.bin"]  # dry: untouched

    code, last = sync_json(rclone_server, src, url, *flt, "--delete")
    assert code == 0, last
    assert (last["copied"], last["deleted"], last["requests"]) == (1, 1, {"put_object": 1})
    stored = keys(s3, bucket, "nightly/")
    assert sorted(stored) == ["a.txt", "cache/old", "d/b.bin", "keep.tmp"]
    assert stored["a.txt"] == b"alpha, longer now"


def test_sync_down_sets_mtimes_so_the_second_run_copies_nothing(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"p/dir{i % 2}/f{i}", Body=os.urandom(10 + i))
    dst = os.path.join(work_dir, "restore")
    code, first = sync_json(rclone_server, f"s3://{bucket}/p/", dst)
    assert code == 0
    assert first["copied"] == 5
    assert read_tree(dst) == keys(s3, bucket, "p/")
    code, second = sync_json(rclone_server, f"s3://{bucket}/p/", dst)
    assert code == 0
    assert (second["copied"], second["unchanged"], second["requests"]) == (0, 5, {})


def test_sync_s3_to_s3_is_server_side(rclone_server: LocalS3Server, bucket: str, s3: Any) -> None:
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"a/f{i}", Body=os.urandom(200))
    code, out = sync_json(rclone_server, f"s3://{bucket}/a", f"s3://{bucket}/b")
    assert code == 0, out
    assert out["requests"].keys() <= {"copy_object", "head_object"}  # no GET, no PUT
    assert out["requests"]["copy_object"] == 3
    assert keys(s3, bucket, "b/") == keys(s3, bucket, "a/")
    r = run_cli(rclone_server, "sync", f"s3://{bucket}/a/", f"s3://{bucket}/a/sub/")
    assert r.returncode == 2
    assert "overlap" in r.stderr


def test_size_only_and_checksum_modes(
    rclone_server: LocalS3Server, bucket: str, work_dir: str
) -> None:
    src = os.path.join(work_dir, "src")
    tree(src, {"f": b"12345"})
    age(src, "f", 30)
    url = f"s3://{bucket}/m/"
    assert sync_json(rclone_server, src, url)[1]["copied"] == 1
    tree(src, {"f": b"54321"})  # same size, newer, other bytes
    assert sync_json(rclone_server, src, url, "--size-only", "--dry-run")[1]["to_copy"] == []
    assert [t["path"] for t in sync_json(rclone_server, src, url, "--checksum")[1]["to_copy"]] == [
        "f"
    ]
    assert sync_json(rclone_server, src, url, "--checksum")[1]["copied"] == 0


def test_delete_is_skipped_when_a_source_path_cannot_be_synced(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    tree(src, {"good": b"good"})
    with open(os.path.join(os.fsencode(src), b"bad-\xff"), "wb") as f:
        f.write(b"not UTF-8: cannot be a key")
    s3.put_object(Bucket=bucket, Key="t/stale", Body=b"would be deleted")
    r = run_cli(rclone_server, "sync", src, f"s3://{bucket}/t", "--delete")
    assert r.returncode == 1
    assert "not synced" in r.stderr
    assert "nothing deleted" in r.stderr
    assert sorted(keys(s3, bucket, "t/")) == ["good", "stale"]


def test_delete_with_an_empty_or_missing_source_is_refused(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="keep/x", Body=b"x")
    empty = os.path.join(work_dir, "mnt")
    os.mkdir(empty)  # an unmounted disk
    r = run_cli(rclone_server, "sync", empty, f"s3://{bucket}/keep", "--delete")
    assert r.returncode == 2
    assert "is empty" in r.stderr
    r = run_cli(rclone_server, "sync", empty + "-typo", f"s3://{bucket}/keep", "--delete")
    assert r.returncode == 3
    assert "no such directory" in r.stderr
    assert sorted(keys(s3, bucket, "keep/")) == ["x"]


def test_cp_recursive_filters_never_send_excluded_files(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    tree(src, {"a.dump": b"1", "b.log": b"2", "meta/m": b"3", "x/a.dump": b"4"})
    r = run_cli(
        rclone_server,
        "cp",
        "-r",
        src,
        f"s3://{bucket}/c",
        "--include",
        "*.dump",
        "--include",
        "meta/**",
    )
    assert r.returncode == 0, r.stderr
    assert sorted(keys(s3, bucket, "c/")) == ["a.dump", "meta/m", "x/a.dump"]
    back = os.path.join(work_dir, "back")
    r = run_cli(rclone_server, "cp", "-r", f"s3://{bucket}/c", back, "--exclude", "/x/**")
    assert r.returncode == 0, r.stderr
    assert sorted(read_tree(back)) == ["a.dump", "meta/m"]
    r = run_cli(
        rclone_server, "cp", os.path.join(src, "a.dump"), f"s3://{bucket}/", "--exclude", "*"
    )
    assert r.returncode == 2
    assert "-r" in r.stderr


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--include", "keep.tmp", "--exclude", "*.tmp"],
            {"keep.tmp": True, "x.tmp": False, "a": True},
        ),
        (
            ["--exclude", "*.tmp", "--include", "keep.tmp"],
            {"keep.tmp": False, "x.tmp": False, "a": True},
        ),
        (["--include", "*.tar"], {"a.tar": True, "d/b.tar": True, "a": False}),
        (
            ["--exclude", "cache/", "--exclude-from", "FILE"],
            {"cache/x": False, "a.bak": False, "a": True},
        ),
    ],
)
def test_filters_keep_the_command_line_order(
    argv: list[str], expected: dict[str, bool], tmp_path: Any
) -> None:
    patterns = tmp_path / "patterns"
    patterns.write_text("# backups\n*.bak\n\n")
    argv = [str(patterns) if a == "FILE" else a for a in argv]
    args = build_parser().parse_args(["sync", "src", "s3://bucket/p", *argv])
    flt = filters_from_args(args)
    assert {path: flt.included(path) for path in expected} == expected


def test_cp_between_s3_locations_is_server_side(
    rclone_server: LocalS3Server, bucket: str, s3: Any
) -> None:
    for i in range(4):
        s3.put_object(Bucket=bucket, Key=f"src/d/f{i}.bin", Body=os.urandom(100 * (i + 1)))
    r = run_cli(rclone_server, "cp", "-r", f"s3://{bucket}/src", f"s3://{bucket}/dst", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["requests"]["copy_object"] == 4
    assert "get_object" not in out["requests"]
    assert "put_object" not in out["requests"]
    assert keys(s3, bucket, "dst/") == keys(s3, bucket, "src/")
    r = run_cli(rclone_server, "cp", f"s3://{bucket}/src/d/f0.bin", f"s3://{bucket}/one/")
    assert r.returncode == 0, r.stderr
    assert keys(s3, bucket, "one/") == {"f0.bin": keys(s3, bucket, "src/d/")["f0.bin"]}


def test_sync_sets_object_options_on_uploads_and_refuses_them_on_downloads(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    tree(src, {"page.html": b"<p>hi</p>", "data.bin": b"\x00" * 10})
    url = f"s3://{bucket}/site/"
    code, out = sync_json(rclone_server, src, url, "--metadata", "owner=ops")
    assert code == 0, out
    html = s3.head_object(Bucket=bucket, Key="site/page.html")
    assert meta(html)["owner"] == "ops"
    assert "mtime" in meta(html)  # the sync convention is kept beside the user's keys
    assert html["ContentType"] == "text/html"  # guessed from the name, as cp does
    tree(src, {"data.bin": b"\x01" * 11})
    code, out = sync_json(rclone_server, src, url, "--content-type", "application/x-test")
    assert (code, out["copied"]) == (0, 1)
    data = s3.head_object(Bucket=bucket, Key="site/data.bin")
    assert data["ContentType"] == "application/x-test"

    # S3 -> S3: --metadata adds keys on the server-side copy; the rest would not apply.
    code, out = sync_json(rclone_server, url, f"s3://{bucket}/copy/", "--metadata", "tier=2")
    assert code == 0, out
    assert meta(s3.head_object(Bucket=bucket, Key="copy/page.html"))["tier"] == "2"
    r = run_cli(rclone_server, "sync", url, f"s3://{bucket}/c2/", "--sse", "AES256")
    assert r.returncode == 2
    assert "--sse sets how uploads are stored; this is a server-side copy" in r.stderr
    r = run_cli(rclone_server, "sync", url, os.path.join(work_dir, "down"), "--metadata", "a=b")
    assert r.returncode == 2
    assert "this is a download" in r.stderr
    assert not os.path.exists(os.path.join(work_dir, "down"))  # refused before any request
