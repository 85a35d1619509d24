"""Connections and memory are taken in one order by every transfer, so transfers
sharing a manager cannot block each other for good.

The hang this guards against: with more transfers running than connections
(the default once the tuner lowers the count: the transfers allowed at once
stay at ``max_concurrency``), small files that took a buffer and wait for a
connection, and multipart parts that took a connection and wait for a buffer,
each hold what the others wait for; so do the ranges of a streamed download
(``cp s3://... -``) when the memory budget is one part.  Before the single PUT
and the streamed download took the connection first, every run here timed out.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import pytest

from fastxfer import TransferConfig, TransferManager
from fastxfer.limits import MiB


def _files(work_dir: str, prefix: str, count: int, size: int) -> list[str]:
    paths = []
    for i in range(count):
        p = os.path.join(work_dir, f"{prefix}{i}")
        with open(p, "wb") as f:
            f.write(os.urandom(size))
        paths.append(p)
    return paths


@pytest.mark.parametrize("rep", range(2))
@pytest.mark.parametrize("mix", ["small-files", "stream"])
async def test_transfers_of_every_kind_finish_when_both_budgets_are_tight(
    make_config: Callable[..., TransferConfig],
    bucket: str,
    s3: Any,
    work_dir: str,
    mix: str,
    rep: int,
) -> None:
    large = _files(work_dir, "large", 4, 24 * MiB)  # multipart: 3 parts each
    small = _files(work_dir, "small", 8, 7 * MiB) if mix == "small-files" else []
    streamed = os.urandom(24 * MiB)
    if mix == "stream":
        s3.put_object(Bucket=bucket, Key="streamed", Body=streamed)
    cfg = make_config(
        part_size=8 * MiB,
        multipart_threshold=8 * MiB,
        # Two parts; one for the stream (its ranges wait for the writer in order,
        # so it holds all the memory only when the budget is a single part).
        memory_limit=(16 if mix == "small-files" else 8) * MiB,
        max_concurrency=2,
        autotune=False,
        max_active_transfers=16,
    )
    got: list[bytes] = []

    def write(chunk: memoryview) -> int:
        got.append(bytes(chunk))
        return len(chunk)

    async with TransferManager(cfg) as tm:
        async with asyncio.timeout(90):  # a hang, not slowness: this takes ~2 s
            handles = [tm.upload(p, bucket, os.path.basename(p)) for p in large + small]
            if mix == "stream":
                handles.append(tm.stream(bucket, "streamed", write))
            await asyncio.gather(*handles)
        stats = tm.stats()
    assert stats.memory_in_use == 0
    assert stats.connections_in_use == 0
    for p in large + small:
        with open(p, "rb") as f:
            body = s3.get_object(Bucket=bucket, Key=os.path.basename(p))["Body"].read()
            assert body == f.read()
    if mix == "stream":
        assert b"".join(got) == streamed
