"""Streaming an object to a writer in order (what `cp s3://b/k -` does), on rclone serve s3."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from fastxfer import ColdObject, IntegrityError, TransferConfig, TransferManager
from fastxfer.limits import MiB

from faultproxy import FaultProxy


class Sink:
    """A blocking writer that keeps what it got (stdout stands in the CLI)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def __call__(self, chunk: memoryview) -> int:
        self.chunks.append(bytes(chunk))
        return len(chunk)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


@pytest.mark.parametrize(
    "size", [0, 1, 5 * MiB + 3, 41 * MiB + 7], ids=["empty", "1B", "5MiB", "41MiB"]
)
async def test_stream_writes_the_object_in_order_in_bounded_memory(
    make_config: Callable[..., TransferConfig], bucket: str, s3: Any, size: int
) -> None:
    data = os.urandom(size)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    cfg = make_config(part_size=8 * MiB, memory_limit=24 * MiB, max_concurrency=8)
    sink = Sink()
    async with TransferManager(cfg) as tm:
        await tm.upload(data, bucket, "k")  # with fastxfer's CRC64NVME, checked at the end
        st = await tm.stream(bucket, "k", sink)
        peak = tm.stats().memory_peak
    assert sink.data == data
    assert st.bytes_done == size
    assert peak <= 24 * MiB
    assert st.requests.get("get_object", 0) == -(-size // (8 * MiB))
    if size:
        assert st.verified == "client"


async def test_a_range_cut_mid_stream_is_fetched_again_from_where_it_stopped(
    rclone_server: Any, bucket: str, s3: Any
) -> None:
    data = os.urandom(20 * MiB)
    async with FaultProxy("127.0.0.1", rclone_server.port, cut_response_after=3 * MiB) as px:
        cfg = TransferConfig(
            endpoint_url=px.endpoint_url,
            aws_access_key_id=rclone_server.access_key,
            aws_secret_access_key=rclone_server.secret_key,
            part_size=8 * MiB,
            max_concurrency=2,
        )
        sink = Sink()
        async with TransferManager(cfg) as tm:
            await tm.upload(data, bucket, "k")
            st = await tm.stream(bucket, "k", sink)
        assert px.cuts == 1
    assert st.retries >= 1
    assert sink.data == data


async def test_a_corrupt_object_fails_after_the_stream(
    make_config: Callable[..., TransferConfig], bucket: str, s3: Any
) -> None:
    data = os.urandom(2 * MiB)
    async with TransferManager(make_config()) as tm:
        await tm.upload(data, bucket, "k")
        meta = s3.head_object(Bucket=bucket, Key="k")["Metadata"]
        # Same metadata (and CRC), other bytes: what a damaged copy looks like.
        s3.put_object(Bucket=bucket, Key="k", Body=os.urandom(2 * MiB), Metadata=meta)
        with pytest.raises(IntegrityError, match="discard"):
            await tm.stream(bucket, "k", Sink())


async def test_an_archived_object_is_not_streamed(
    moto_config: Callable[..., TransferConfig], moto_bucket: str
) -> None:
    async with TransferManager(moto_config()) as tm:
        await tm.upload(b"x", moto_bucket, "cold", storage_class="DEEP_ARCHIVE")
        with pytest.raises(ColdObject, match="restore"):
            await tm.stream(moto_bucket, "cold", Sink())
