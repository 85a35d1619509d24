"""The engine against moto's server: server-verified checksums, storage classes, cold objects."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from fastxfer import ColdObject, InvalidConfig, TransferConfig, TransferManager
from fastxfer.limits import MiB


@pytest.mark.parametrize("size", [3 * MiB, 21 * MiB + 17], ids=["single", "multipart"])
async def test_server_checksum_mode_roundtrip(
    moto_config: Callable[..., TransferConfig],
    moto_bucket: str,
    moto_s3: Any,
    work_dir: str,
    size: int,
) -> None:
    data = os.urandom(size)
    cfg = moto_config(checksum="server", part_size=5 * MiB, multipart_threshold=8 * MiB)
    async with TransferManager(cfg) as tm:
        up = await tm.upload(data, moto_bucket, "obj")
        head = moto_s3.head_object(Bucket=moto_bucket, Key="obj", ChecksumMode="ENABLED")
        # The server stored a whole-object CRC64NVME equal to the one fastxfer computed.
        assert head["ChecksumCRC64NVME"] == up.checksum
        if up.multipart:
            assert head["ChecksumType"] == "FULL_OBJECT"
        dst = os.path.join(work_dir, "obj")
        down = await tm.download(moto_bucket, "obj", dst)
    assert down.verified == "client"
    # moto stores checksums but does not check them: the upload says so.
    assert up.verified == "sent"
    assert down.checksum == up.checksum
    with open(dst, "rb") as f:
        assert f.read() == data


@pytest.mark.parametrize("storage_class", ["GLACIER_IR", "STANDARD_IA", "DEEP_ARCHIVE"])
async def test_storage_class_is_applied(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any, storage_class: str
) -> None:
    async with TransferManager(moto_config()) as tm:
        await tm.upload(b"x" * 1000, moto_bucket, "small", storage_class=storage_class)
        await tm.upload(
            os.urandom(20 * MiB), moto_bucket, "big", storage_class=storage_class.lower()
        )
    for key in ("small", "big"):
        assert moto_s3.head_object(Bucket=moto_bucket, Key=key)["StorageClass"] == storage_class


async def test_cold_object_download_names_the_restore_command(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, work_dir: str
) -> None:
    async with TransferManager(moto_config()) as tm:
        await tm.upload(b"frozen", moto_bucket, "vol1", storage_class="DEEP_ARCHIVE")
        await tm.upload(b"instant", moto_bucket, "ir", storage_class="GLACIER_IR")
        dst = os.path.join(work_dir, "vol1")
        with pytest.raises(ColdObject) as info:
            await tm.download(moto_bucket, "vol1", dst)
        assert f"fastxfer restore s3://{moto_bucket}/vol1" in str(info.value)
        assert info.value.exit_code == 7
        assert not os.path.exists(dst)
        await tm.download(moto_bucket, "ir", os.path.join(work_dir, "ir"))
    with open(os.path.join(work_dir, "ir"), "rb") as f:
        assert f.read() == b"instant"


@pytest.mark.parametrize("size", [1024, 12 * MiB], ids=["put", "multipart"])
async def test_server_side_encryption_is_requested(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any, size: int
) -> None:
    cfg = moto_config(part_size=5 * MiB, multipart_threshold=8 * MiB)
    async with TransferManager(cfg) as tm:
        await tm.upload(os.urandom(size), moto_bucket, "enc", sse="AES256")
        with pytest.raises(InvalidConfig, match="encryption"):
            tm.upload(b"x", moto_bucket, "bad", sse="rot13")
    assert moto_s3.head_object(Bucket=moto_bucket, Key="enc")["ServerSideEncryption"] == "AES256"
