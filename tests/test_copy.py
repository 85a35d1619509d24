"""Server-side copy: CopyObject and concurrent UploadPartCopy, on moto and rclone serve s3."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from fastxfer import ColdObject, TransferConfig, TransferManager
from fastxfer.integrity import METADATA_KEY
from fastxfer.limits import MiB


async def test_small_copy_keeps_bytes_metadata_and_checksum(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    data = os.urandom(3 * MiB)
    async with TransferManager(moto_config(checksum="client")) as tm:
        up = await tm.upload(
            data, moto_bucket, "src/a.bin", metadata={"owner": "ops"}, content_type="x-test/a"
        )
        st = await tm.copy(
            moto_bucket, "src/a.bin", moto_bucket, "dst/a.bin", storage_class="STANDARD_IA"
        )
        down = await tm.download(moto_bucket, "dst/a.bin", os.path.join(work_dir, "a"))
    head = moto_s3.head_object(Bucket=moto_bucket, Key="dst/a.bin")
    assert head["Metadata"]["owner"] == "ops"
    assert head["Metadata"][METADATA_KEY] == up.checksum
    assert head["ContentType"] == "x-test/a"
    assert head["StorageClass"] == "STANDARD_IA"
    assert st.requests == {"head_object": 1, "copy_object": 1}
    assert down.verified == "client"  # the copied CRC64NVME checked the copied bytes
    with open(os.path.join(work_dir, "a"), "rb") as f:
        assert f.read() == data


async def test_large_copy_uses_concurrent_part_copies_and_reads_no_data(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any, work_dir: str
) -> None:
    data = os.urandom(22 * MiB)
    cfg = moto_config(
        checksum="client",
        copy_threshold=8 * MiB,
        part_size=5 * MiB,
        multipart_threshold=8 * MiB,
        max_concurrency=8,
    )
    async with TransferManager(cfg) as tm:
        up = await tm.upload(data, moto_bucket, "big", metadata={"k": "v"}, content_type="a/b")
        st = await tm.copy(moto_bucket, "big", moto_bucket, "big-copy", metadata={"extra": "1"})
        assert await tm.list_multipart_uploads(moto_bucket) == []
        down = await tm.download(moto_bucket, "big-copy", os.path.join(work_dir, "c"))
    assert st.multipart
    assert st.parts_total == 5  # 22 MiB in parts of 5 MiB (no smaller than part_size)
    assert st.requests["upload_part_copy"] == 5
    assert "get_object" not in st.requests  # no byte through the client
    assert st.bytes_done == len(data)
    head = moto_s3.head_object(Bucket=moto_bucket, Key="big-copy")
    assert head["Metadata"] == {"k": "v", "extra": "1", METADATA_KEY: up.checksum}
    assert head["ContentType"] == "a/b"
    assert down.verified == "client"
    with open(os.path.join(work_dir, "c"), "rb") as f:
        assert f.read() == data


async def test_copy_onto_itself_changes_the_storage_class(
    moto_config: Callable[..., TransferConfig], moto_bucket: str, moto_s3: Any
) -> None:
    async with TransferManager(moto_config()) as tm:
        await tm.upload(b"volume", moto_bucket, "vol1")
        await tm.copy(moto_bucket, "vol1", moto_bucket, "vol1", storage_class="DEEP_ARCHIVE")
        info = await tm.head(moto_bucket, "vol1")
    assert info.storage_class == "DEEP_ARCHIVE"
    assert info.size == len(b"volume")


async def test_an_archived_source_is_not_copied(
    moto_config: Callable[..., TransferConfig], moto_bucket: str
) -> None:
    async with TransferManager(moto_config()) as tm:
        await tm.upload(b"cold", moto_bucket, "cold", storage_class="GLACIER")
        with pytest.raises(ColdObject, match="restore"):
            await tm.copy(moto_bucket, "cold", moto_bucket, "elsewhere")


async def test_copy_on_rclone(
    make_config: Callable[..., TransferConfig], bucket: str, s3: Any
) -> None:
    data = os.urandom(1 * MiB)
    async with TransferManager(make_config()) as tm:
        await tm.upload(data, bucket, "a", metadata={"m": "1"})
        await tm.copy(bucket, "a", bucket, "b")
    got = s3.get_object(Bucket=bucket, Key="b")
    assert got["Body"].read() == data
    assert {k.lower(): v for k, v in got["Metadata"].items()}["m"] == "1"
