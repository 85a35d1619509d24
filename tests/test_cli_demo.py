"""``fastxfer serve -v`` (the server's log on stderr) and ``fastxfer demo --cold`` (a batch
restore on the local Glacier-like server), run as a user runs them: real subprocesses,
real servers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import boto3_client

from fastxfer.limits import MiB

CLI = [sys.executable, "-m", "fastxfer.cli"]
NEEDS_MOTO = "fastxfer: error: demo --cold needs moto: pip install 'fastxfer[demo]'"


def _wait_for(path: Path, text: str, timeout: float = 10.0) -> str:
    """The contents of ``path`` once ``text`` is in it (or at the timeout)."""
    deadline = time.monotonic() + timeout
    content = path.read_text(errors="replace")
    while text not in content and time.monotonic() < deadline:
        time.sleep(0.05)
        content = path.read_text(errors="replace")
    return content


# -- serve -v ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "shown", "not_shown"),
    [
        ([], None, "serve s3"),
        # rclone's INFO: a line per object written (no line per read at this level)
        (["-v"], "Moved (server-side) to: demo/hello.txt", "GET OBJECT"),
        # rclone's DEBUG: a line per request
        (["-vv"], "GET OBJECT Bucket: demo Object: hello.txt", None),
    ],
    ids=["quiet", "v", "vv"],
)
def test_serve_shows_the_server_log_with_v(
    tmp_path: Path, flags: list[str], shown: str | None, not_shown: str | None
) -> None:
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*CLI, "serve", str(tmp_path / "root"), "--bucket", "demo", *flags],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(3)]
        env = dict(re.findall(r"(AWS_\w+)=(\S+)", banner[1]))
        s3 = boto3_client(
            env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        )
        s3.put_object(Bucket="demo", Key="hello.txt", Body=b"hello")
        assert s3.get_object(Bucket="demo", Key="hello.txt")["Body"].read() == b"hello"
        log = _wait_for(stderr, shown) if shown else stderr.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    if shown is None:
        assert stderr.read_text() == ""  # quiet, as before -v existed
    else:
        assert shown in log
    if not_shown is not None:
        assert not_shown not in log
    assert banner[2].startswith("Ctrl-C to stop")  # the banner stays on stdout


# -- demo --cold ---------------------------------------------------------------------


def test_demo_cold_restores_in_one_batch_then_downloads() -> None:
    """3 DEEP_ARCHIVE objects, restores that take 1 s: the estimate is printed, the
    server sees exactly one RestoreObject per object, all before the first GetObject
    (which waits for the restore), and the files come back byte-identical."""
    files, delay = 3, 1.0
    r = subprocess.run(
        [
            *CLI,
            "demo",
            "--cold",
            "--files",
            str(files),
            "--size",
            "3MiB",
            "--restore-delay",
            f"{delay:g}s",
            "--no-progress",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    assert out["identical"] is True
    assert out["bytes"] == 3 * MiB
    # the estimate, as `fastxfer restore --dry-run` prints it
    assert f"DEEP_ARCHIVE Standard {files:>9} objects" in r.stderr
    assert f"requests: RestoreObject {files}, GET {files}," in r.stderr
    assert re.search(r"price: restore \$[\d.]+ \+ requests \$[\d.]+ = \$[\d.]+", r.stderr)
    assert out["estimate"]["requests"]["RestoreObject"] == files
    # what the server counted
    assert out["server_requests"]["RestoreObject"] == files
    assert out["server_requests"]["GetObject"] == files
    assert out["server_requests"]["PutObject"] == files  # small files: one PUT each
    assert out["one_restore_per_object"] is True
    assert out["restores_before_first_get"] is True
    assert out["first_get_after_first_restore"] >= delay
    assert out["restore"]["downloaded"] == files
    assert out["restore"]["failed"] == 0
    assert r.stderr.count("CRC64NVME checked") == files
    assert "round trip byte-identical: yes" in r.stderr
    assert f"received {files} RestoreObject requests for {files} objects (one each)" in r.stderr


def test_demo_cold_without_moto_says_how_to_get_it() -> None:
    """moto made unimportable in the CLI's process: one line, exit 2, no server started."""
    code = (
        "import sys; sys.modules['moto'] = None\n"
        "from fastxfer.cli import main\n"
        "raise SystemExit(main(['demo', '--cold']))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.splitlines() == [NEEDS_MOTO]
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cold", "--restore-delay", "soon"], "--restore-delay: invalid duration 'soon'"),
        (["--cold", "--restore-delay", "0s"], "--restore-delay: duration must be positive"),
        (["--restore-delay", "5s"], "--restore-delay goes with --cold"),
        (["--cold", "--size", "lots"], "--size"),
    ],
)
def test_demo_cold_bad_input_is_one_line(args: list[str], says: str) -> None:
    r = subprocess.run(
        [*CLI, "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("fastxfer: error: ")
    assert says in lines[0]
    assert r.stdout == ""
