"""`fastxfer rm`, `mv`, per-object settings, `-v` logs and `--json` errors (real processes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from test_cli import run_cli
from test_sync import tree

from fastxfer.cli.logs import redact
from fastxfer.coldserver import RealisticMotoServer
from fastxfer.localserver import LocalS3Server


def listing(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [item["Key"] for item in page.get("Contents", [])]
    return sorted(out)


def meta(head: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in head.get("Metadata", {}).items()}


# -- rm ---------------------------------------------------------------------------------


def test_rm_one_key_and_the_mistakes_around_it(
    rclone_server: LocalS3Server, bucket: str, s3: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="a/x", Body=b"x")
    s3.put_object(Bucket=bucket, Key="a/y", Body=b"y")
    r = run_cli(rclone_server, "rm", f"s3://{bucket}/a/x")
    assert r.returncode == 0, r.stderr
    assert listing(s3, bucket) == ["a/y"]
    r = run_cli(rclone_server, "rm", f"s3://{bucket}/a/x")
    assert r.returncode == 4
    assert "does not exist" in r.stderr
    r = run_cli(rclone_server, "rm", f"s3://{bucket}/a/")
    assert r.returncode == 2
    assert "-r" in r.stderr
    assert listing(s3, bucket) == ["a/y"]


def test_rm_recursive_dry_run_then_with_filters_then_all(
    rclone_server: LocalS3Server, bucket: str, s3: Any
) -> None:
    keys = [f"p/{i:04d}.bin" for i in range(1203)] + ["p/keep/me.txt", "p/x.log", "other/z"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=b"12345")
    r = run_cli(rclone_server, "rm", "-r", f"s3://{bucket}/p", "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"would delete: s3://{bucket}/p/0000.bin (5 B)"
    assert lines[-1] == "dry run: would delete 1205 objects (5.9 KiB)"
    assert len(listing(s3, bucket)) == 1206  # nothing deleted

    r = run_cli(
        rclone_server,
        "rm",
        "-r",
        f"s3://{bucket}/p/",
        "--exclude",
        "keep/",
        "--exclude",
        "*.log",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["objects"], out["bytes"], out["dry_run"]) == (1203, 1203 * 5, False)
    assert listing(s3, bucket) == ["other/z", "p/keep/me.txt", "p/x.log"]

    r = run_cli(rclone_server, "rm", "-r", f"s3://{bucket}/p")
    assert r.returncode == 0, r.stderr
    assert listing(s3, bucket) == ["other/z"]  # the prefix is p/, not "p*"


# -- mv ---------------------------------------------------------------------------------


def test_mv_local_to_s3_removes_the_file_after_the_upload(
    rclone_server: LocalS3Server, bucket: str, s3: Any, work_dir: str
) -> None:
    src = os.path.join(work_dir, "src")
    files = {"a.bin": os.urandom(7000), "d/b.txt": b"bee", "d/skip.tmp": b"t"}
    tree(src, files)
    r = run_cli(
        rclone_server, "mv", "-r", src, f"s3://{bucket}/moved", "--exclude", "*.tmp", "--json"
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["moved"] == 2
    assert listing(s3, bucket) == ["moved/a.bin", "moved/d/b.txt"]
    assert s3.get_object(Bucket=bucket, Key="moved/a.bin")["Body"].read() == files["a.bin"]
    assert not os.path.exists(os.path.join(src, "a.bin"))
    assert not os.path.exists(os.path.join(src, "d", "b.txt"))
    assert os.path.exists(os.path.join(src, "d", "skip.tmp"))  # excluded: not moved


def test_mv_keeps_the_file_when_the_upload_fails(
    rclone_server: LocalS3Server, work_dir: str
) -> None:
    path = os.path.join(work_dir, "precious.bin")
    tree(work_dir, {"precious.bin": b"data"})
    r = run_cli(rclone_server, "mv", path, "s3://no-such-bucket-here/x")
    assert r.returncode == 4, r.stderr
    assert os.path.exists(path)


def test_mv_s3_to_s3_server_side_and_back_to_local(
    rclone_server: LocalS3Server, bucket: str, s3: Any, work_dir: str
) -> None:
    body = os.urandom(12345)
    s3.put_object(Bucket=bucket, Key="in/obj.bin", Body=body, Metadata={"owner": "ops"})
    r = run_cli(rclone_server, "mv", f"s3://{bucket}/in/obj.bin", f"s3://{bucket}/out/", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["moved"] == 1
    assert out["requests"].get("copy_object") == 1
    assert "get_object" not in out["requests"]
    assert listing(s3, bucket) == ["out/obj.bin"]
    head = s3.head_object(Bucket=bucket, Key="out/obj.bin")
    assert meta(head)["owner"] == "ops"
    dest = os.path.join(work_dir, "local.bin")
    r = run_cli(rclone_server, "mv", f"s3://{bucket}/out/obj.bin", dest)
    assert r.returncode == 0, r.stderr
    with open(dest, "rb") as f:
        assert f.read() == body
    assert listing(s3, bucket) == []


# -- per-object settings -------------------------------------------------------------------


def test_metadata_and_content_type_on_uploads(
    rclone_server: LocalS3Server, bucket: str, s3: Any, work_dir: str
) -> None:
    tree(work_dir, {"page.html": b"<p>", "data.bin": b"\x00", "notes": b"n"})
    r = run_cli(
        rclone_server,
        "cp",
        "-r",
        work_dir,
        f"s3://{bucket}/site",
        "--metadata",
        "owner=backup-team",
        "--metadata",
        "retention=90d",
    )
    assert r.returncode == 0, r.stderr
    page = s3.head_object(Bucket=bucket, Key="site/page.html")
    assert page["ContentType"] == "text/html"  # guessed from the name, as aws does
    assert meta(page)["owner"] == "backup-team"
    assert meta(page)["retention"] == "90d"
    r = run_cli(
        rclone_server,
        "cp",
        os.path.join(work_dir, "notes"),
        f"s3://{bucket}/n",
        "--content-type",
        "text/markdown",
    )
    assert r.returncode == 0, r.stderr
    assert s3.head_object(Bucket=bucket, Key="n")["ContentType"] == "text/markdown"
    for bad, message in [
        (["--metadata", "novalue"], "KEY=VALUE"),
        (["--metadata", "k=v", "--metadata", "K=w"], "given twice"),
        (["--metadata", "k=été"], "US-ASCII"),
        (["--sse-kms-key-id", "abc"], "--sse aws:kms"),
    ]:
        r = run_cli(rclone_server, "cp", os.path.join(work_dir, "notes"), f"s3://{bucket}/n", *bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert message in r.stderr, (bad, r.stderr)


def moto_cli(srv: RealisticMotoServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    env.pop("AWS_PROFILE", None)
    cmd = [sys.executable, "-m", "fastxfer.cli", *args, "--endpoint-url", srv.endpoint_url]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_server_side_encryption_on_moto(
    moto_server: RealisticMotoServer, moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    tree(work_dir, {"a.bin": os.urandom(1000)})
    src = os.path.join(work_dir, "a.bin")
    r = moto_cli(moto_server, "cp", src, f"s3://{moto_bucket}/aes", "--sse", "AES256")
    assert r.returncode == 0, r.stderr
    assert moto_s3.head_object(Bucket=moto_bucket, Key="aes")["ServerSideEncryption"] == "AES256"
    r = moto_cli(
        moto_server,
        "cp",
        src,
        f"s3://{moto_bucket}/kms",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        "alias/backup",
    )
    assert r.returncode == 0, r.stderr
    head = moto_s3.head_object(Bucket=moto_bucket, Key="kms")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert "alias/backup" in head["SSEKMSKeyId"]


# -- logs and JSON errors --------------------------------------------------------------


def test_verbose_logs_requests_and_never_the_secrets(
    rclone_server: LocalS3Server, bucket: str, work_dir: str
) -> None:
    tree(work_dir, {"f.txt": b"hello"})
    token = "FQoGZXIvYXdzEJr-session-token-0123456789"
    r = run_cli(
        rclone_server,
        "cp",
        os.path.join(work_dir, "f.txt"),
        f"s3://{bucket}/f.txt",
        "-v",
        AWS_SESSION_TOKEN=token,
    )
    assert r.returncode == 0, r.stderr  # rclone serve s3 ignores the token
    log = r.stderr
    assert "Making request for OperationModel(name=PutObject)" in log
    assert "Sending http request" in log
    # The lean path's headers are str, botocore's bytes: redacted either way.
    assert re.search(r"'Authorization': b?'<redacted>'", log)
    assert re.search(r"'X-Amz-Security-Token': b?'<redacted>'", log)
    assert "botocore.hooks" not in log  # -v: the requests, not botocore's internals
    assert rclone_server.secret_key not in log
    assert token not in log
    assert "Signature=" not in log.replace("Signature=<redacted>", "")
    r = run_cli(rclone_server, "ls", f"s3://{bucket}/", "--log-level", "debug")
    assert r.returncode == 0
    assert rclone_server.secret_key not in r.stderr
    assert "botocore.hooks" in r.stderr  # -vv / debug: everything botocore says


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        (
            "headers={'Authorization': b'AWS4-HMAC-SHA256 Credential=AK/x, SignedHeaders=host, "
            "Signature=0123456789abcdef0123'}",
            ["Credential=AK", "0123456789abcdef0123"],
        ),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AK/1, Signature=fedcba9876543210aa",
            ["fedcba98"],
        ),
        (
            "GET /k?X-Amz-Signature=abcdef0123456789&X-Amz-Security-Token=tok%2Fen&x=1",
            ["abcdef01", "tok%2Fen"],
        ),
        ("x-amz-security-token:IQoJb3JpZ2luX2VjE\nhost:s3", ["IQoJb3JpZ2luX2VjE"]),
        ("Signature:\n" + "ab" * 32, ["ab" * 32]),
        ("{'aws_secret_access_key': 'wJalrXUtnFEMI/K7MDENG'}", ["wJalrXUtnFEMI"]),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", ["wJalrXUtnFEMI"]),
        ("the secret THE-LITERAL-SECRET-42 in any text", ["THE-LITERAL-SECRET-42"]),
    ],
)
def test_redaction(text: str, hidden: list[str]) -> None:
    out = redact(text, ["THE-LITERAL-SECRET-42"])
    assert "<redacted>" in out
    for secret in hidden:
        assert secret not in out


def test_json_error_object_with_the_exit_code(rclone_server: LocalS3Server, work_dir: str) -> None:
    r = run_cli(rclone_server, "cp", "s3://no-such-bucket-here/k", work_dir, "--json")
    assert r.returncode == 4
    err = json.loads(r.stdout)
    assert err["exit"] == 4
    assert "no-such-bucket-here" in err["error"]
    r = run_cli(rclone_server, "sync", work_dir, "s3://no-such-bucket-here/p", "--json", "--nope")
    assert r.returncode == 2
    assert json.loads(r.stdout) == {
        "error": "unrecognized arguments: --nope",
        "exit": 2,
        "type": "CommandLineError",
    }
    r = run_cli(rclone_server, "rm", "-r", "s3://no-such-bucket-here/p", "--json")
    assert r.returncode == 4
    assert json.loads(r.stdout)["exit"] == 4
