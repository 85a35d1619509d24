"""Streaming an object to a writer in order (``fastxfer cp s3://b/k -``), ranged GETs behind it.

Ranges of ``part_size`` are fetched concurrently into buffers of the memory
budget (taken before each GET, so memory stays bounded however large the
object) and handed to the writer strictly in order; a range that breaks
mid-stream is fetched again from where its bytes stopped.  The writer is a
blocking callable (``sys.stdout.buffer.write``), run in a thread so a slow
pipe never stalls the event loop.

The CRC64NVME of the bytes written is compared with the object's at the end.
Bytes already written cannot be taken back: a mismatch raises IntegrityError
(a non-zero exit) after the stream, and the consumer must discard what it got.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastxfer import integrity
from fastxfer.budget import Buffer
from fastxfer.errors import IntegrityError, first_error, translate
from fastxfer.planning import retry_budget
from fastxfer.session import transport_errors
from fastxfer.shielded import start_owning
from fastxfer.tokenbucket import CHUNK_SIZE

if TYPE_CHECKING:
    from fastxfer.session import Session
    from fastxfer.transfer import _Tracker

Writer = Callable[[memoryview], Any]
"""A blocking write of a chunk, e.g. ``sys.stdout.buffer.write``."""


async def run_stream(
    session: Session, bucket: str, key: str, write: Writer, tracker: _Tracker
) -> None:
    cfg = session.config
    info = await session.head(bucket, key, counts=tracker.requests)
    tracker.size = info.size
    tracker.storage_class = info.storage_class
    tracker.etag = info.etag
    info.require_readable("stream")
    size = info.size
    part = cfg.part_size
    count = -(-size // part)  # 0 for an empty object: nothing to fetch or write
    budget = retry_budget(cfg.max_attempts, count)
    tracker.parts_total = count
    tracker.multipart = count > 1
    pool = session.buffers
    loop = asyncio.get_running_loop()
    # One future per range, completed with its buffer; the writer consumes in order.
    # Made by whichever side asks first, dropped once written.
    ready: dict[int, asyncio.Future[tuple[Buffer, int]]] = {}
    crc = 0

    def slot(index: int) -> asyncio.Future[tuple[Buffer, int]]:
        fut = ready.get(index)
        if fut is None:
            fut = ready[index] = loop.create_future()
        return fut

    bw = session.bandwidth
    chunk = cfg.io_chunk_size if bw is None else min(cfg.io_chunk_size, CHUNK_SIZE)

    async def fetch(index: int, buf: Buffer) -> None:
        start = index * part
        end = min(size, start + part)
        pos, attempt = start, 0
        filled = False
        try:
            conn = bw.new_connection_bucket() if bw is not None else None
            while pos < end:
                try:
                    kw: dict[str, Any] = {"Range": f"bytes={pos}-{end - 1}"}
                    if info.etag:
                        kw["IfMatch"] = info.etag
                    async with session.open_get(
                        bucket, key, held_slot=True, counts=tracker.requests, **kw
                    ) as resp:
                        info.check_same_object(resp)
                        stream = resp["Body"]
                        while pos < end:
                            data = await stream.read(min(chunk, end - pos))
                            if not data:
                                break
                            if bw is not None:  # caps apply where the bytes arrive
                                await bw.acquire(len(data), "down", conn)
                            if pos + len(data) > end:
                                raise IntegrityError(f"s3://{bucket}/{key}: too many bytes")
                            buf[pos - start : pos - start + len(data)] = data
                            pos += len(data)
                    if pos < end:
                        raise ConnectionError(f"connection closed at byte {pos}")
                except transport_errors() as exc:
                    attempt += 1
                    if attempt >= cfg.max_attempts or tracker.retries >= budget:
                        raise translate(exc, bucket=bucket, key=key, op="download") from exc
                    tracker.retries += 1
                    await session.sleep(min(0.2 * 2**attempt, 5.0))
            filled = True
        finally:
            session.connections.release()
            if not filled:
                pool.put(buf)  # failed or cancelled: the writer will never take it
        slot(index).set_result((buf, end - start))

    def give_back(buf: Buffer) -> Callable[[], None]:
        def give() -> None:
            session.connections.release()
            pool.put(buf)

        return give

    async def drain() -> None:
        nonlocal crc
        for index in range(count):
            buf, length = await slot(index)
            del ready[index]
            try:
                view = memoryview(buf)[:length]
                await loop.run_in_executor(None, write, view)
                crc = integrity.crc64nvme(view, crc)
                view.release()
            finally:
                pool.put(buf)
            tracker.parts_done += 1
            tracker.progress(length)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(drain())
            for index in range(count):
                # A connection, then memory (Session.slot_and_buffer), then the
                # GET: at most the memory budget's worth of ranges wait for the
                # writer.
                buf = await session.slot_and_buffer(part)
                start_owning(tg, fetch(index, buf), give_back(buf))
    except BaseExceptionGroup as eg:
        raise first_error(eg) from eg
    finally:
        # Ranges fetched but never written (the writer or another range failed).
        for fut in ready.values():
            if fut.done() and not fut.cancelled():
                pool.put(fut.result()[0])
    _check(info.whole_crc64nvme, crc, bucket, key, cfg.effective_checksum)
    tracker.checksum = integrity.to_b64(crc)
    tracker.verified = "client" if info.whole_crc64nvme is not None else "size"
    tracker.progress(0, flush=True)


def _check(expected: int | None, got: int, bucket: str, key: str, mode: str) -> None:
    if mode == "off" or expected is None:
        return
    if got != expected:
        raise IntegrityError(
            f"s3://{bucket}/{key}: CRC64NVME mismatch in the streamed bytes "
            f"(got {integrity.to_b64(got)}, object says {integrity.to_b64(expected)}); "
            "discard what was written",
            hint="retry; if it persists the stored object is damaged",
        )
