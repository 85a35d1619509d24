"""README's Python examples run as written against `fastxfer serve`, as a newcomer runs them."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_block(section: str) -> str:
    """The first ```python block after the heading ``section``."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"\n## {section}\n")
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match is not None, section
    return match.group(1)


@pytest.fixture
def served(tmp_path: object) -> Iterator[dict[str, str]]:
    """`fastxfer serve DIR --bucket bucket`; the environment its `export` line gives."""
    root = os.path.join(str(tmp_path), "s3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastxfer.cli", "serve", root, "--bucket", "bucket"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        env = dict(os.environ)
        env.pop("AWS_PROFILE", None)
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "fastxfer serve printed nothing"
        for _ in range(3):  # its banner is printed (and flushed) at once
            line = proc.stdout.readline()
            if line.startswith("export "):
                for kv in line.split()[1:]:
                    name, value = kv.split("=", 1)
                    env[name] = value
                break
        else:
            pytest.fail("no export line from fastxfer serve")
        yield env
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.mark.parametrize(
    "section", ["Python API", "Blocking API (scripts and other synchronous callers)"]
)
def test_the_readme_example_runs_as_written(
    section: str, served: dict[str, str], tmp_path: object
) -> None:
    code = python_block(section)
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=str(tmp_path),
        env=served,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip(), "the example prints what it did"
    if section == "Python API":
        with (
            open(os.path.join(str(tmp_path), "backup.tar"), "rb") as a,
            open(os.path.join(str(tmp_path), "restored.tar"), "rb") as b,
        ):
            assert a.read() == b.read()
    else:
        with open(os.path.join(str(tmp_path), "restored.dump"), "rb") as f:
            assert f.read() == b"db.dump" * 1000
