"""Fixtures that start real S3 servers on 127.0.0.1 (free ports, random bucket names)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from fastxfer import TransferConfig, TransferManager
from fastxfer.coldserver import RealisticMotoServer
from fastxfer.localserver import LocalS3Server


def _tmpfs() -> str | None:
    """/dev/shm when it is writable and roomy (containers often give it 64 MiB),
    else None: the default temp directory."""
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        return None
    return shm if shutil.disk_usage(shm).free >= 2 * 1024**3 else None


tmpfs_dir = _tmpfs


@pytest.fixture(scope="session")
def rclone_server() -> Iterator[LocalS3Server]:
    """rclone serve s3 on tmpfs, one per test session."""
    with (
        tempfile.TemporaryDirectory(prefix="fx-rclone-", dir=_tmpfs()) as root,
        LocalS3Server(root=root) as srv,
    ):
        yield srv


@pytest.fixture
def bucket(rclone_server: LocalS3Server) -> str:
    return rclone_server.make_bucket("fx-" + secrets.token_hex(6))


@pytest.fixture
def work_dir() -> Iterator[str]:
    """A scratch directory on tmpfs (fast, and big files do not touch the disk)."""
    with tempfile.TemporaryDirectory(prefix="fx-test-", dir=_tmpfs()) as d:
        yield d


def rclone_config(srv: LocalS3Server, **kw: Any) -> TransferConfig:
    return TransferConfig(
        endpoint_url=srv.endpoint_url,
        aws_access_key_id=srv.access_key,
        aws_secret_access_key=srv.secret_key,
        **kw,
    )


@pytest.fixture
def make_config(rclone_server: LocalS3Server) -> Callable[..., TransferConfig]:
    return lambda **kw: rclone_config(rclone_server, **kw)


@pytest.fixture(params=["lean", "botocore"])
def request_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine's tests run on both request paths: the lean one
    (fastxfer/leanpath.py, the default) and botocore's whole pipeline.  A module
    opts in with ``pytestmark = pytest.mark.usefixtures("request_path")``."""
    path = str(request.param)
    if path == "botocore":
        monkeypatch.setattr("fastxfer.session.LEAN_OPS", {})
    return path


@pytest.fixture
async def tm(rclone_server: LocalS3Server) -> AsyncIterator[TransferManager]:
    async with TransferManager(rclone_config(rclone_server, max_concurrency=8)) as m:
        yield m


def boto3_client(endpoint: str, key: str, secret: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


@pytest.fixture
def s3(rclone_server: LocalS3Server) -> Any:
    """A plain boto3 client on the rclone server, to check what fastxfer did."""
    return boto3_client(
        rclone_server.endpoint_url, rclone_server.access_key, rclone_server.secret_key
    )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[RealisticMotoServer]:
    with RealisticMotoServer(restore_delay=1.0) as srv:
        yield srv


@pytest.fixture
def moto_bucket(moto_server: RealisticMotoServer) -> str:
    name = "fx-" + secrets.token_hex(6)
    boto3_client(moto_server.endpoint_url, "testing", "testing").create_bucket(Bucket=name)
    return name


@pytest.fixture
def moto_config(moto_server: RealisticMotoServer) -> Callable[..., TransferConfig]:
    def make(**kw: Any) -> TransferConfig:
        return TransferConfig(
            endpoint_url=moto_server.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            **kw,
        )

    return make


@pytest.fixture
def moto_s3(moto_server: RealisticMotoServer) -> Any:
    return boto3_client(moto_server.endpoint_url, "testing", "testing")
