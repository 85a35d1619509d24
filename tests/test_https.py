"""HTTPS: rclone serve s3 with a self-signed certificate, trusted through AWS_CA_BUNDLE.

``TransferConfig()`` verifies TLS by default and lets botocore choose the CA
bundle, so ``AWS_CA_BUNDLE`` is honoured; without it the endpoint is
unreachable, at once and with a hint.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fastxfer import EndpointUnreachable, TransferConfig, TransferManager
from fastxfer.limits import MiB
from fastxfer.localserver import LocalS3Server

# Every test here runs on both request paths (conftest.request_path).
pytestmark = pytest.mark.usefixtures("request_path")


@dataclass(frozen=True)
class TlsServer:
    server: LocalS3Server
    ca_bundle: str
    bucket: str

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def config(self, **kw: object) -> TransferConfig:
        return TransferConfig(
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.server.access_key,
            aws_secret_access_key=self.server.secret_key,
            **kw,  # type: ignore[arg-type]
        )


def _self_signed(directory: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (valid one day) and its key, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    with tempfile.TemporaryDirectory(prefix="fx-tls-") as d:
        cert, key = _self_signed(d)
        root = os.path.join(d, "root")
        bucket = "fx-" + secrets.token_hex(6)
        # A top-level folder made before the server starts is a bucket (rclone
        # only misses folders made behind its back while it runs).
        os.makedirs(os.path.join(root, bucket))
        with LocalS3Server(root=root, extra_args=("--cert", cert, "--key", key)) as srv:
            yield TlsServer(srv, cert, bucket)


@pytest.fixture
def work_dir_local() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="fx-https-") as d:
        yield d


@pytest.mark.parametrize("checksum", ["client", "md5", "off", "server"])
@pytest.mark.parametrize("size", [1 * MiB + 3, 12 * MiB + 5], ids=["single", "multipart"])
async def test_round_trip_over_https_in_every_checksum_mode(
    tls_server: TlsServer,
    work_dir_local: str,
    monkeypatch: pytest.MonkeyPatch,
    checksum: str,
    size: int,
) -> None:
    """Upload and download back, single PUT/GET and multipart/ranged, trusting the
    self-signed certificate only through AWS_CA_BUNDLE.

    rclone checks Content-MD5 and nothing else: in ``server`` mode the CRC64NVME
    goes in a header it does not check (the upload says 'sent'); on the way back
    a multipart object can only be checked for its size.
    """
    monkeypatch.setenv("AWS_CA_BUNDLE", tls_server.ca_bundle)
    src = os.path.join(work_dir_local, "src")
    data = os.urandom(size)
    with open(src, "wb") as f:
        f.write(data)
    key = f"{checksum}/{size}"
    cfg = tls_server.config(
        checksum=checksum,
        part_size=5 * MiB,
        multipart_threshold=5 * MiB,
        download_part_size=5 * MiB,
        max_concurrency=4,
        state_path=os.path.join(work_dir_local, "state.sqlite"),
    )
    dest = os.path.join(work_dir_local, "dest")
    async with TransferManager(cfg) as tm:
        up = await asyncio.wait_for(tm.upload(src, tls_server.bucket, key), timeout=60)
        down = await asyncio.wait_for(tm.download(tls_server.bucket, key, dest), timeout=60)
    multipart = size >= 5 * MiB
    assert up.multipart == multipart
    assert down.multipart == multipart
    with open(dest, "rb") as f:
        assert f.read() == data
    assert (
        up.verified == {"client": "client", "md5": "sent", "server": "sent", "off": None}[checksum]
    )
    if checksum == "client" or (checksum == "server" and not multipart):
        # server mode, one PUT: rclone keeps the x-amz-checksum-crc64nvme it was
        # sent (without checking it) and returns it, so the download checks it.
        assert down.verified == "client"
    elif checksum == "md5":
        # rclone's multipart ETag is an MD5 of the whole object, so it checks too.
        assert down.verified == "md5"
    else:
        assert down.verified == "size"


async def test_without_the_ca_bundle_the_endpoint_is_unreachable_at_once(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with TransferManager(tls_server.config()) as tm:
        with pytest.raises(EndpointUnreachable, match="TLS handshake failed") as info:
            await asyncio.wait_for(tm.head(tls_server.bucket, "k"), timeout=30)
    assert info.value.exit_code == 6
    assert info.value.hint is not None
    assert "AWS_CA_BUNDLE" in info.value.hint
    # Not retried: botocore's five attempts with back-off took 10-25 s.
    assert loop.time() - started < 8


async def test_verify_tls_with_a_ca_bundle_path(
    tls_server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``verify_tls`` may also name the bundle itself (the CLI's --ca-bundle)."""
    monkeypatch.delenv("AWS_CA_BUNDLE", raising=False)
    async with TransferManager(tls_server.config(verify_tls=tls_server.ca_bundle)) as tm:
        await asyncio.wait_for(tm.upload(b"hello", tls_server.bucket, "ca/k"), timeout=30)
        info = await asyncio.wait_for(tm.head(tls_server.bucket, "ca/k"), timeout=30)
    assert info.size == 5
