"""``fastxfer cp`` never reports success on an incomplete result, never blocks on a
non-regular source, and applies storage-class rules relative to the destination;
``restore-status`` reports what the job really did.  Real processes, real servers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from typing import Any

import pytest

from fastxfer.coldserver import RealisticMotoServer
from fastxfer.localpath import UnmappedKey, map_keys
from fastxfer.localserver import LocalS3Server
from fastxfer.storage_class import parse_rules, resolve_storage_class


def fx(
    endpoint: str, key: str, secret: str, *args: str, state_dir: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``fastxfer ARGS`` against ``endpoint``, isolated from the user's AWS files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FASTXFER_"))}
    env.update(
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_ENDPOINT_URL=endpoint,
        AWS_CONFIG_FILE=os.path.join(state_dir, "aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=os.path.join(state_dir, "aws-credentials"),
        FASTXFER_STATE=os.path.join(state_dir, "state.sqlite"),
    )
    return subprocess.run(
        [sys.executable, "-m", "fastxfer.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def on_moto(
    srv: RealisticMotoServer, *args: str, state_dir: str
) -> subprocess.CompletedProcess[str]:
    return fx(srv.endpoint_url, "testing", "testing", *args, state_dir=state_dir)


def on_rclone(
    srv: LocalS3Server, *args: str, state_dir: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return fx(
        srv.endpoint_url,
        srv.access_key,
        srv.secret_key,
        *args,
        state_dir=state_dir,
        timeout=timeout,
    )


def files_under(root: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for d, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out[os.path.relpath(os.path.join(d, n), root)] = f.read()
    return out


# -- item 3: keys that cannot be saved, keys that would collide --------------------------

UNSAFE = {
    "t/a/../x": "'..' path segment",
    "t/a/./y": "'.' path segment",
    "t/..": "'..' path segment",
    "t/a//dbl.txt": "empty path segment",
    "t/d": "it would be a file and the folder of 't/d/x'",
}
SAFE = {
    "t/ok.txt": "ok.txt",
    "t/a/dbl.txt": "a/dbl.txt",
    "t/d/x": "d/x",
    "t/s/deep.bin": "s/deep.bin",
}


def test_recursive_download_reports_what_it_cannot_save_and_exits_1(
    moto_server: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    for key in [*UNSAFE, *SAFE]:
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=key.encode())
    moto_s3.put_object(Bucket=moto_bucket, Key="t/folder/", Body=b"")  # a console's folder
    dst = os.path.join(work_dir, "dst", "inner")
    r = on_moto(
        moto_server, "cp", "-r", f"s3://{moto_bucket}/t/", dst, "--json", state_dir=work_dir
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == len(UNSAFE), r.stderr  # one line each, nothing else
    for key, reason in UNSAFE.items():
        assert any(f"s3://{moto_bucket}/{key}: {reason}" in line for line in lines), (key, lines)
    summary = json.loads(r.stdout)
    assert summary["ok"] is False
    assert {s["name"] for s in summary["skipped"]} == {f"s3://{moto_bucket}/{k}" for k in UNSAFE}
    assert summary["files"] == len(SAFE)
    assert summary["files_failed"] == 0
    # The safe ones are all there, byte for byte, and nothing else anywhere.
    assert files_under(dst) == {
        os.path.join(*rel.split("/")): key.encode() for key, rel in SAFE.items()
    }
    assert files_under(os.path.join(work_dir, "dst")) == {
        os.path.join("inner", *rel.split("/")): key.encode() for key, rel in SAFE.items()
    }


def test_recursive_download_of_safe_keys_exits_0(
    moto_server: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    for key in SAFE:
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=key.encode())
    moto_s3.put_object(Bucket=moto_bucket, Key="t/folder/", Body=b"")
    dst = os.path.join(work_dir, "dst")
    r = on_moto(moto_server, "cp", "-r", f"s3://{moto_bucket}/t", dst, state_dir=work_dir)
    assert r.returncode == 0, r.stderr
    assert len(files_under(dst)) == len(SAFE)


@pytest.mark.parametrize(
    ("keys", "prefix", "kept", "refused"),
    [
        (["p/a/dbl.txt", "p/a//dbl.txt"], "p/", ["p/a/dbl.txt"], ["p/a//dbl.txt"]),
        (["p//x"], "p/", [], ["p//x"]),  # never folded into p/x
        (["d", "d/x", "d/y/z"], "", ["d/x", "d/y/z"], ["d"]),
        (["d/x", "d"], "", ["d/x"], ["d"]),  # whatever the order
        (["d/y", "d/y/z", "d/y/w"], "", ["d/y/z", "d/y/w"], ["d/y"]),
        (["a", "ab", "a.b", "a b"], "", ["a", "ab", "a.b", "a b"], []),
        (["x/../../etc/passwd", ".", "ok"], "", ["ok"], ["x/../../etc/passwd", "."]),
    ],
)
def test_map_keys(keys: list[str], prefix: str, kept: list[str], refused: list[str]) -> None:
    mapped, unmapped = map_keys("/dst", keys, prefix)
    assert [k for k, _ in mapped] == kept
    assert sorted(u.key for u in unmapped) == sorted(refused)
    assert len({p for _, p in mapped}) == len(mapped)
    for key, path in mapped:
        assert path == os.path.join("/dst", *key[len(prefix) :].split("/"))
    assert all(isinstance(u, UnmappedKey) and u.reason for u in unmapped)


@pytest.mark.parametrize("seed", range(5))
def test_map_keys_properties(seed: int) -> None:
    """Random listings made of troublesome pieces: whatever is kept lands under the
    root, on distinct files, none of which is another's directory; the rest is refused."""
    rng = random.Random(seed)
    pieces = ["a", "b", ".", "..", "", "a.b", "é", " "]
    keys = sorted(
        {"p/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))) for _ in range(300)}
    )
    mapped, unmapped = map_keys("/dst", keys, "p/")
    assert len(mapped) + len(unmapped) == len(keys)
    paths = [p for _, p in mapped]
    assert len(set(paths)) == len(paths)
    for path in paths:
        assert os.path.commonpath(["/dst", path]) == "/dst"
        assert os.path.normpath(path) == path  # nothing a file system would fold
    dirs: set[str] = set()
    for path in paths:
        while (path := os.path.dirname(path)) != "/dst":
            dirs.add(path)
    assert not dirs & set(paths)  # no file is also a directory
    for key, path in mapped:
        assert path == os.path.join("/dst", *key[2:].split("/"))


# -- item 2: non-regular sources --------------------------------------------------------


def test_fifo_source_is_refused_at_once(
    rclone_server: LocalS3Server, bucket: str, work_dir: str
) -> None:
    """No writer ever opens the FIFO: a blocking open would hang until the timeout."""
    fifo = os.path.join(work_dir, "pipe")
    os.mkfifo(fifo)
    r = on_rclone(rclone_server, "cp", fifo, f"s3://{bucket}/pipe", state_dir=work_dir, timeout=60)
    assert r.returncode == 3, r.stderr
    assert r.stderr.splitlines() == [
        f"fastxfer: error: {fifo}: a FIFO, not a regular file (fastxfer uploads regular "
        "files; write the stream to a file first)"
    ]


def test_tree_with_a_fifo_uploads_the_rest_and_exits_1(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, s3: Any
) -> None:
    src = os.path.join(work_dir, "src")
    os.makedirs(os.path.join(src, "sub"))
    for name in ("a.txt", "sub/b.txt"):
        with open(os.path.join(src, name), "w") as f:
            f.write(name)
    os.mkfifo(os.path.join(src, "sub", "pipe"))
    os.symlink(os.path.join(src, "sub"), os.path.join(src, "link-to-dir"))
    os.symlink(os.path.join(src, "missing"), os.path.join(src, "broken"))
    bad_name = os.path.join(os.fsencode(src), b"caf\xe9.txt")  # Latin-1, not UTF-8
    with open(bad_name, "wb") as f:
        f.write(b"x")
    r = on_rclone(
        rclone_server,
        "cp",
        "-r",
        src,
        f"s3://{bucket}/t/",
        "--json",
        state_dir=work_dir,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 4, r.stderr
    assert any("sub/pipe: a FIFO, not a regular file" in line for line in lines), lines
    assert any("link-to-dir: a link to a directory (not followed)" in line for line in lines)
    assert any("broken: a broken link" in line for line in lines), lines
    assert any("caf\\udce9.txt: the name is not valid UTF-8" in line for line in lines), lines
    assert len(json.loads(r.stdout)["skipped"]) == 4
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["t/a.txt", "t/sub/b.txt"]


# -- item 4: storage-class rules relative to the destination ---------------------------


def test_storage_class_rules_match_keys_relative_to_the_destination(
    moto_server: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    src = os.path.join(work_dir, "backup")
    for rel in ("meta/index", "data/vol1", "data/meta/vol2", "b1.manifest", "x/y.manifest"):
        os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
        with open(os.path.join(src, rel), "w") as f:
            f.write(rel)
    rules = [
        "--storage-class-rule",
        "*.manifest=STANDARD",
        "--storage-class-rule",
        "meta/=STANDARD",
    ]
    r = on_moto(
        moto_server,
        "cp",
        "-r",
        src,
        f"s3://{moto_bucket}/b1/",
        "--storage-class",
        "DEEP_ARCHIVE",
        *rules,
        state_dir=work_dir,
    )
    assert r.returncode == 0, r.stderr
    single = os.path.join(work_dir, "meta")  # a file named like the prefix rule: no match
    with open(single, "w") as f:
        f.write("m")
    for dst in (f"s3://{moto_bucket}/b1/one/", f"s3://{moto_bucket}/b1/two/c.manifest"):
        r = on_moto(
            moto_server, "cp", single, dst, "--storage-class", "GLACIER", *rules, state_dir=work_dir
        )
        assert r.returncode == 0, r.stderr
    listed = moto_s3.list_objects_v2(Bucket=moto_bucket)["Contents"]
    assert {o["Key"]: o.get("StorageClass", "STANDARD") for o in listed} == {
        "b1/meta/index": "STANDARD",
        "b1/data/vol1": "DEEP_ARCHIVE",
        "b1/data/meta/vol2": "DEEP_ARCHIVE",  # meta/ is a prefix of the relative key only
        "b1/b1.manifest": "STANDARD",
        "b1/x/y.manifest": "STANDARD",
        "b1/one/meta": "GLACIER",
        "b1/two/c.manifest": "STANDARD",
    }


@pytest.mark.parametrize(
    ("key", "base", "expected"),
    [
        ("b1/meta/x", "b1/", "STANDARD"),
        ("b1/meta/x", "", None),  # whole key: b1/meta/x does not start with meta/
        ("meta/x", "", "STANDARD"),
        ("b1/data/meta/x", "b1/", None),
        ("other/meta/x", "b1/", None),  # outside the base: matched whole
        ("b1/v.manifest", "b1/", "DEEP_ARCHIVE"),
    ],
)
def test_resolve_storage_class_relative_to_base(key: str, base: str, expected: str | None) -> None:
    rules = parse_rules(["meta/=STANDARD", "*.manifest=DEEP_ARCHIVE"])
    assert resolve_storage_class(key, rules, base=base) == expected


# -- item 5: restore-status reports failures and the job's tier -------------------------


def test_restore_status_reports_failed_downloads_and_the_real_tier(
    moto_server: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    for key in ("r/ok.bin", "r/sub/blocked.bin"):
        moto_s3.put_object(Bucket=moto_bucket, Key=key, Body=b"data", StorageClass="GLACIER")
    out = os.path.join(work_dir, "out")
    os.makedirs(out)
    with open(os.path.join(out, "sub"), "w") as f:
        f.write("a file where the download needs a directory")
    state = os.path.join(work_dir, "restore.sqlite")
    url = f"s3://{moto_bucket}/r/"
    run = on_moto(
        moto_server,
        "restore",
        url,
        "--tier",
        "Bulk",
        "--download",
        out,
        "--poll-interval",
        "1s",
        "--state",
        state,
        "--json",
        state_dir=work_dir,
    )
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert (report["failed"], report["downloaded"], report["tier"]) == (1, 1, "Bulk")

    status = on_moto(
        moto_server, "restore-status", url, "--state", state, "--json", state_dir=work_dir
    )
    assert status.returncode == 1, status.stderr
    st = json.loads(status.stdout)
    assert st["tier"] == "Bulk"
    assert st["failed"] == 1
    assert [e["key"] for e in st["errors"]] == ["r/sub/blocked.bin"]
    text = on_moto(moto_server, "restore-status", "--state", state, state_dir=work_dir)
    assert text.returncode == 1
    assert "1 failed; tier Bulk" in text.stdout

    # The way cleared, a rerun downloads it; the failure is forgotten.
    os.unlink(os.path.join(out, "sub"))
    rerun = on_moto(
        moto_server,
        "restore",
        url,
        "--tier",
        "Bulk",
        "--download",
        out,
        "--poll-interval",
        "1s",
        "--state",
        state,
        "-q",
        state_dir=work_dir,
    )
    assert rerun.returncode == 0, rerun.stderr
    st = json.loads(
        on_moto(
            moto_server, "restore-status", url, "--state", state, "--json", state_dir=work_dir
        ).stdout
    )
    assert (st["failed"], st["tier"]) == (0, "Bulk")
