"""The CLI end to end: byte-identical round trips and one clear line per bad input."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from fastxfer import InvalidConfig, InvalidS3Url, LocalFileError, TransferConfig, UsageError
from fastxfer.cli import build_parser, main
from fastxfer.cli.common import config_from_args
from fastxfer.limits import MiB
from fastxfer.localpath import local_path_for_key
from fastxfer.localserver import LocalS3Server, free_port
from fastxfer.s3url import parse_s3_url


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
    assert young.stderr.strip() == (
        "0 incomplete uploads older than 1h aborted (1 younger one spared)"
    )
    dry = run_cli(
        rclone_server, "abort-uploads", f"s3://{bucket}/", "--older-than", "1h", "--dry-run"
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stderr.strip() == (
        "0 incomplete uploads older than 1h to abort (1 younger one spared)"
    )
    assert dry.stdout == ""
    dry = run_cli(
        rclone_server, "abort-uploads", f"s3://{bucket}/", "--older-than", "0", "--dry-run"
    )
    assert "would abort" in dry.stdout
    assert "orphan/vol1" in dry.stdout
    r = run_cli(rclone_server, "abort-uploads", f"s3://{bucket}/orphan/", "--older-than", "0")
    assert r.returncode == 0, r.stderr
    assert "aborted" in r.stdout
    assert r.stderr.strip() == "1 incomplete upload aborted"
    assert up["UploadId"] not in str(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_ls_buckets_and_one_level(rclone_server: LocalS3Server, bucket: str, work_dir: str) -> None:
    src = os.path.join(work_dir, "src")
    make_file(os.path.join(src, "top.txt"), 3)
    make_file(os.path.join(src, "sub", "inner.txt"), 5)
    assert run_cli(rclone_server, "cp", "-r", src, f"s3://{bucket}/t/").returncode == 0
    buckets = run_cli(rclone_server, "ls", "--json")
    assert buckets.returncode == 0, buckets.stderr
    assert {"bucket": bucket} in [json.loads(line) for line in buckets.stdout.splitlines()]
    level = run_cli(rclone_server, "ls", f"s3://{bucket}/t/", "--json")
    assert level.returncode == 0, level.stderr
    records = [json.loads(line) for line in level.stdout.splitlines()]
    assert {"prefix": "t/sub/"} in records
    assert [(r["key"], r["size"]) for r in records if "key" in r] == [("t/top.txt", 3)]
    missing = run_cli(rclone_server, "ls", "s3://no-such-bucket-here/")
    assert missing.returncode == 4, missing.stderr
    assert "does not exist" in missing.stderr


# -- configuration: flags > environment > defaults -----------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("FASTXFER_CONCURRENCY", "8", "max_concurrency", 8),
        ("FASTXFER_PART_SIZE", "32MiB", "part_size", 32 * MiB),
        ("FASTXFER_MULTIPART_THRESHOLD", "64M", "multipart_threshold", 64 * 1024 * 1024),
        ("FASTXFER_MEMORY_LIMIT", "1GiB", "memory_limit", 1024 * MiB),
        ("FASTXFER_CHECKSUM", "MD5", "checksum", "md5"),
        ("FASTXFER_STORAGE_CLASS", "deep-archive", "storage_class", "DEEP_ARCHIVE"),
        ("FASTXFER_BWLIMIT", "4MiB/s", "bwlimit", 4.0 * MiB),
        # rclone's --bwlimit timetable form, in the variable too
        ("FASTXFER_BWLIMIT", "08:00,512K 23:00,off", "bwlimit_schedule", "08:00,512K 23:00,off"),
        ("FASTXFER_BWLIMIT_UP", "800K", "bwlimit_up", 800 * 1024.0),
        ("FASTXFER_BWLIMIT_DOWN", "off", "bwlimit_down", 0.0),
        ("FASTXFER_BWLIMIT_PER_CONNECTION", "1MiB", "bwlimit_per_connection", 1.0 * MiB),
        ("FASTXFER_BWLIMIT_SCHEDULE", "22:00-06:00 off", "bwlimit_schedule", "22:00-06:00 off"),
        ("FASTXFER_TPS", "2.5", "tps", 2.5),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1", "endpoint_url", "http://127.0.0.1:1"),
        ("AWS_PROFILE", "backup", "profile", "backup"),
    ],
)
def test_from_env_reads_each_variable(
    variable: str, value: str, field: str, expected: object
) -> None:
    assert getattr(TransferConfig.from_env({variable: value}), field) == expected
    assert getattr(TransferConfig.from_env({variable: ""}), field) == getattr(
        TransferConfig(), field
    )


def test_from_env_endpoint_order_and_overrides() -> None:
    env = {"AWS_ENDPOINT_URL_S3": "http://s3:1", "AWS_ENDPOINT_URL": "http://any:1"}
    assert TransferConfig.from_env(env).endpoint_url == "http://s3:1"
    assert TransferConfig.from_env({"AWS_ENDPOINT_URL": "http://any:1"}).endpoint_url == (
        "http://any:1"
    )
    cfg = TransferConfig.from_env(
        {"FASTXFER_CONCURRENCY": "8", "FASTXFER_TPS": "5"}, max_concurrency=4
    )
    assert (cfg.max_concurrency, cfg.tps) == (4, 5.0)
    with pytest.raises(TypeError):
        TransferConfig.from_env({}, no_such_field=1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FASTXFER_CONCURRENCY": "lots"}, "FASTXFER_CONCURRENCY: invalid number 'lots'"),
        ({"FASTXFER_CONCURRENCY": "0"}, "FASTXFER_CONCURRENCY: invalid value '0'"),
        ({"FASTXFER_PART_SIZE": "huge"}, "FASTXFER_PART_SIZE: invalid size 'huge'"),
        ({"FASTXFER_PART_SIZE": "1MiB"}, "FASTXFER_PART_SIZE: invalid value '1MiB'"),
        ({"FASTXFER_CHECKSUM": "sha1"}, "FASTXFER_CHECKSUM: invalid value 'sha1'"),
        ({"FASTXFER_STORAGE_CLASS": "FROZEN"}, "FASTXFER_STORAGE_CLASS: invalid value"),
        ({"FASTXFER_BWLIMIT": "fast"}, "FASTXFER_BWLIMIT: invalid rate 'fast'"),
        ({"FASTXFER_TPS": "-1"}, "FASTXFER_TPS: invalid"),
        ({"FASTXFER_BWLIMIT_SCHEDULE": "always"}, "FASTXFER_BWLIMIT_SCHEDULE: invalid value"),
        ({"FASTXFER_BWLIMIT": "08:00,fast"}, "FASTXFER_BWLIMIT: invalid"),
        (
            {"FASTXFER_PART_SIZE": "64MiB", "FASTXFER_MEMORY_LIMIT": "32MiB"},
            "FASTXFER_PART_SIZE, FASTXFER_MEMORY_LIMIT: invalid combination",
        ),
    ],
)
def test_from_env_names_the_bad_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidConfig) as info:
        TransferConfig.from_env(env)
    assert str(info.value).startswith(message), info.value


def test_from_env_blames_the_flag_not_the_environment() -> None:
    with pytest.raises(InvalidConfig) as info:
        TransferConfig.from_env({"FASTXFER_CONCURRENCY": "8"}, part_size=1 * MiB)
    assert "FASTXFER" not in str(info.value)


def test_auto_checksum_is_client_for_any_endpoint() -> None:
    assert TransferConfig.from_env({}).effective_checksum == "server"
    assert (
        TransferConfig.from_env({"AWS_ENDPOINT_URL": "http://x:1"}).effective_checksum == "client"
    )
    assert TransferConfig.from_env({}, endpoint_url="http://x:1").effective_checksum == "client"


def test_cli_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTXFER_CONCURRENCY", "8")
    monkeypatch.setenv("FASTXFER_PART_SIZE", "32MiB")
    monkeypatch.setenv("FASTXFER_BWLIMIT", "1MiB")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:1")
    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["cp", "a", "s3://b/k", "--concurrency", "4"]))
    assert (cfg.max_concurrency, cfg.part_size, cfg.bwlimit) == (4, 32 * MiB, 1.0 * MiB)
    assert cfg.endpoint_url == "http://from-env:1"
    assert cfg.effective_checksum == "client"
    cfg = config_from_args(
        parser.parse_args(["ls", "--endpoint-url", "http://flag:1", "--no-verify-ssl"])
    )
    assert (cfg.endpoint_url, cfg.verify_tls, cfg.max_concurrency) == ("http://flag:1", False, 8)
    # restore's --tps caps RestoreObject requests; it is not the config's tps.
    cfg = config_from_args(parser.parse_args(["restore", "s3://b/p/", "--tps", "7"]))
    assert cfg.tps == 0.0


def test_bad_environment_value_is_one_line_exit_2(work_dir: str) -> None:
    f = os.path.join(work_dir, "f")
    make_file(f, 10)
    r = run_cli(None, "cp", f, "s3://bucket/k", FASTXFER_CONCURRENCY="0")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("fastxfer: error: FASTXFER_CONCURRENCY: invalid value '0'")
    assert len(r.stderr.strip().splitlines()) == 1


def test_bench_points_at_the_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "scripts/dev.sh bench" in err
    assert "python -m benchmarks.run" in err


# -- key -> local path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "prefix", "expected"),
    [
        ("backup/a.txt", "backup/", "a.txt"),
        ("backup/sub dir/ü.bin", "backup/", "sub dir/ü.bin"),
        ("a..b/c.", "", "a..b/c."),
        ("...", "", "..."),
    ],
)
def test_local_path_for_safe_keys(key: str, prefix: str, expected: str) -> None:
    assert local_path_for_key("/dst", key, prefix) == os.path.join("/dst", *expected.split("/"))


@pytest.mark.parametrize(
    ("key", "prefix"),
    [
        ("backup/../../etc/passwd", "backup/"),
        ("backup/..", "backup/"),
        ("backup/./a", "backup/"),
        ("backup/a//b", "backup/"),
        ("backup//a", "backup/"),  # never folded into backup/a
        ("/etc/passwd", ""),
        ("backup/" + "n" * 256, "backup/"),
        ("backup/dir/", "backup/"),
        ("backup/", "backup/"),
        ("other/a", "backup/"),
        ("backup/a\0b", "backup/"),
    ],
)
def test_local_path_refuses_unsafe_keys(key: str, prefix: str) -> None:
    with pytest.raises(LocalFileError):
        local_path_for_key("/dst", key, prefix)


# -- bucket names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "my.bucket-1", "a" * 63, "1bucket"])
def test_valid_bucket_names(name: str) -> None:
    assert parse_s3_url(f"s3://{name}/k").bucket == name


@pytest.mark.parametrize(
    "name", ["ab", "a" * 64, "MyBucket", "under_score", "-start", "end-", "dot..dot"]
)
def test_invalid_bucket_names_get_the_rule(name: str) -> None:
    with pytest.raises(InvalidS3Url) as info:
        parse_s3_url(f"s3://{name}/k")
    assert "3-63 lower-case letters" in str(info.value)


# -- endpoint and profile: checked before any connection -----------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000",
        "https://s3.eu-west-1.amazonaws.com",
        "http://[::1]:9000",
        "HTTP://h",
    ],
)
def test_endpoint_urls_accepted(url: str) -> None:
    cfg = config_from_args(build_parser().parse_args(["ls", "--endpoint-url", url]), {})
    assert cfg.endpoint_url == url


@pytest.mark.parametrize(
    ("url", "env", "source"),
    [
        ("not a url", {}, "--endpoint-url"),
        ("ftp://h:21", {}, "--endpoint-url"),
        ("http://h:port", {}, "--endpoint-url"),
        ("http://", {}, "--endpoint-url"),
        ("http://h:0", {}, "--endpoint-url"),
        (None, {"AWS_ENDPOINT_URL": "h:9000"}, "AWS_ENDPOINT_URL"),
        (None, {"AWS_ENDPOINT_URL_S3": "s3.local", "AWS_ENDPOINT_URL": "http://h"}, "_S3"),
    ],
)
def test_bad_endpoint_url_names_its_source(
    url: str | None, env: dict[str, str], source: str
) -> None:
    argv = ["ls"] + (["--endpoint-url", url] if url is not None else [])
    with pytest.raises(UsageError) as info:
        config_from_args(build_parser().parse_args(argv), env)
    assert str(info.value).startswith("--endpoint-url" if url else "AWS_ENDPOINT_URL")
    assert source in str(info.value)


def test_profile_must_exist(tmp_path: Any) -> None:
    config = tmp_path / "config"
    config.write_text("[profile backup]\nregion = eu-west-1\n")
    creds = tmp_path / "credentials"
    creds.write_text("[offsite]\naws_access_key_id = a\naws_secret_access_key = b\n")
    env = {"AWS_CONFIG_FILE": str(config), "AWS_SHARED_CREDENTIALS_FILE": str(creds)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        parser = build_parser()
        for name in ("backup", "offsite"):
            assert config_from_args(parser.parse_args(["ls", "--profile", name]), env).profile == (
                name
            )
        with pytest.raises(UsageError, match=r"--profile: no profile 'nosuch' in .*config"):
            config_from_args(parser.parse_args(["ls", "--profile", "nosuch"]), env)
        with pytest.raises(UsageError, match="AWS_PROFILE: no profile 'gone'"):
            config_from_args(parser.parse_args(["ls"]), {**env, "AWS_PROFILE": "gone"})
