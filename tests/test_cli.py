"""The CLI end to end: byte-identical round trips and one clear line per bad input."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server, free_port


def run_cli(
    srv: LocalS3Server | None, *args: str, **env_over: str
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if srv is not None:
        env.update(AWS_ACCESS_KEY_ID=srv.access_key, AWS_SECRET_ACCESS_KEY=srv.secret_key)
    env.update(env_over)
    env.pop("AWS_PROFILE", None)
    cmd = [sys.executable, "-m", "fastxfer.cli", *args]
    if srv is not None:
        cmd += ["--endpoint-url", srv.endpoint_url]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)


def make_file(path: str, size: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


def assert_same_tree(a: str, b: str) -> None:
    def files(root: str) -> list[str]:
        return sorted(
            os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns
        )

    fa, fb = files(a), files(b)
    assert fa == fb
    for rel in fa:
        assert filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False), rel


def test_tree_roundtrip_edge_cases(
    rclone_server: LocalS3Server, bucket: str, work_dir: str
) -> None:
    src = os.path.join(work_dir, "src")
    make_file(os.path.join(src, "empty"), 0)
    make_file(os.path.join(src, "exactly one part"), 16 * MiB)
    make_file(os.path.join(src, "sub dir", "ünïcødé 名前 #1.bin"), 17 * MiB + 5)
    make_file(os.path.join(src, "sub dir", "deeper", "small+plus%.txt"), 12)
    r = run_cli(rclone_server, "cp", "-r", src, f"s3://{bucket}/backup", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["ok"]
    assert summary["files"] == 4
    assert summary["bytes"] == 33 * MiB + 17
    listed = run_cli(rclone_server, "ls", "-r", f"s3://{bucket}/backup/", "--json")
    keys = sorted(json.loads(line)["key"] for line in listed.stdout.splitlines())
    assert keys == [
        "backup/empty",
        "backup/exactly one part",
        "backup/sub dir/deeper/small+plus%.txt",
        "backup/sub dir/ünïcødé 名前 #1.bin",
    ]
    dst = os.path.join(work_dir, "dst")
    r = run_cli(rclone_server, "cp", "-r", f"s3://{bucket}/backup", dst)
    assert r.returncode == 0, r.stderr
    assert "4/4 files" in r.stderr
    assert_same_tree(src, dst)


def test_256_files_of_4mib(rclone_server: LocalS3Server, bucket: str, work_dir: str) -> None:
    src = os.path.join(work_dir, "src")
    for i in range(256):
        make_file(os.path.join(src, f"vol-{i:03d}"), 4 * MiB)
    r = run_cli(rclone_server, "cp", "-r", src, f"s3://{bucket}/many/", "--concurrency", "32")
    assert r.returncode == 0, r.stderr
    dst = os.path.join(work_dir, "dst")
    r = run_cli(rclone_server, "cp", "-r", f"s3://{bucket}/many/", dst)
    assert r.returncode == 0, r.stderr
    assert_same_tree(src, dst)


@pytest.mark.slow
def test_one_gib_file(rclone_server: LocalS3Server, bucket: str, work_dir: str) -> None:
    src = os.path.join(work_dir, "big.bin")
    make_file(src, 1024 * MiB)
    r = run_cli(rclone_server, "cp", src, f"s3://{bucket}/big.bin", "--json")
    assert r.returncode == 0, r.stderr
    up = json.loads(r.stdout)["transfers"][0]
    assert up["multipart"]
    assert up["bytes"] == 1024 * MiB
    dst = os.path.join(work_dir, "back.bin")
    r = run_cli(rclone_server, "cp", f"s3://{bucket}/big.bin", dst, "--json")
    assert r.returncode == 0, r.stderr
    down = json.loads(r.stdout)["transfers"][0]
    assert down["verified"] == "client"
    assert down["crc64nvme"] == up["crc64nvme"]
    assert filecmp.cmp(src, dst, shallow=False)
    os.unlink(src)
    os.unlink(dst)


def test_single_file_into_prefix_and_directory(
    rclone_server: LocalS3Server, bucket: str, work_dir: str
) -> None:
    src = os.path.join(work_dir, "report 2026.txt")
    make_file(src, 1000)
    assert run_cli(rclone_server, "cp", src, f"s3://{bucket}/docs/").returncode == 0
    out = os.path.join(work_dir, "out")
    os.mkdir(out)
    r = run_cli(rclone_server, "cp", f"s3://{bucket}/docs/report 2026.txt", out)
    assert r.returncode == 0, r.stderr
    assert filecmp.cmp(src, os.path.join(out, "report 2026.txt"), shallow=False)


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing-file", 3, "no such file or directory"),
        ("bad-url", 2, "malformed S3 URL"),
        ("no-bucket-in-url", 2, "has no bucket"),
        ("unknown-bucket", 4, "does not exist"),
        ("bad-part-size", 2, "invalid --part-size"),
        ("tiny-part-size", 2, "outside S3's limits"),
        ("bad-concurrency", 2, "--concurrency must be at least 1"),
        ("bad-storage-class", 2, "invalid storage class"),
        ("missing-key", 4, "does not exist"),
        ("dir-without-r", 2, "use --recursive"),
    ],
)
def test_bad_input(
    rclone_server: LocalS3Server, bucket: str, work_dir: str, case: str, code: int, message: str
) -> None:
    f = os.path.join(work_dir, "f")
    make_file(f, 10)
    args: dict[str, list[str]] = {
        "missing-file": ["cp", os.path.join(work_dir, "nope"), f"s3://{bucket}/k"],
        "bad-url": ["cp", f, "s3:/nobucket"],
        "no-bucket-in-url": ["cp", f, "s3:///k"],
        "unknown-bucket": ["cp", f, "s3://no-such-bucket-here/k"],
        "bad-part-size": ["cp", f, f"s3://{bucket}/k", "--part-size", "lots"],
        "tiny-part-size": ["cp", f, f"s3://{bucket}/k", "--part-size", "1MiB"],
        "bad-concurrency": ["cp", f, f"s3://{bucket}/k", "--concurrency", "0"],
        "bad-storage-class": ["cp", f, f"s3://{bucket}/k", "--storage-class", "FROZEN"],
        "missing-key": ["cp", f"s3://{bucket}/missing", os.path.join(work_dir, "x")],
        "dir-without-r": ["cp", work_dir, f"s3://{bucket}/k"],
    }
    r = run_cli(rclone_server, *args[case])
    assert r.returncode == code, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    assert not os.path.exists(os.path.join(work_dir, "x"))


def test_wrong_credentials(rclone_server: LocalS3Server, bucket: str, work_dir: str) -> None:
    f = os.path.join(work_dir, "f")
    make_file(f, 10)
    r = run_cli(
        rclone_server,
        "cp",
        f,
        f"s3://{bucket}/k",
        AWS_ACCESS_KEY_ID="nobody",
        AWS_SECRET_ACCESS_KEY="wrong",
    )
    assert r.returncode == 5, r.stderr
    assert "rejected the credentials" in r.stderr


def test_unreachable_endpoint(work_dir: str) -> None:
    f = os.path.join(work_dir, "f")
    make_file(f, 10)
    port = free_port()  # nothing listens there
    r = run_cli(
        None,
        "cp",
        f,
        "s3://bucket/k",
        "--endpoint-url",
        f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="a",
        AWS_SECRET_ACCESS_KEY="b",
    )
    assert r.returncode == 6, r.stderr
    assert "cannot connect" in r.stderr


def test_demo_runs(work_dir: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "fastxfer.cli", "demo", "--size", "48MiB", "--files", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert out["identical"] is True
    assert out["bytes"] == 48 * MiB


def test_abort_uploads_cleans_what_a_killed_process_left(
    rclone_server: LocalS3Server, bucket: str, s3: Any
) -> None:
    """A process killed mid-upload leaves an incomplete multipart upload; abort-uploads
    finds it (and only after --older-than allows) and aborts it."""
    up = s3.create_multipart_upload(Bucket=bucket, Key="orphan/vol1")
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    young = run_cli(rclone_server, "abort-uploads", f"s3://{bucket}/", "--older-than", "1h")
    assert young.returncode == 0, young.stderr
    assert "0 incomplete upload(s)" in young.stderr
    dry = run_cli(
        rclone_server, "abort-uploads", f"s3://{bucket}/", "--older-than", "0", "--dry-run"
    )
    assert "would abort" in dry.stdout
    assert "orphan/vol1" in dry.stdout
    r = run_cli(rclone_server, "abort-uploads", f"s3://{bucket}/orphan/", "--older-than", "0")
    assert r.returncode == 0, r.stderr
    assert "aborted" in r.stdout
    assert up["UploadId"] not in str(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
