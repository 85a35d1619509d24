"""Uploads: one PutObject below the threshold, concurrent multipart above it.

The multipart abort is registered the moment the UploadId exists and runs
shielded with a time bound, whatever ends the upload (error, cancellation).
Part buffers come from the manager's memory budget *before* the part is read
(backpressure before memory), so peak memory is bounded by configuration.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastxfer import integrity
from fastxfer.body import PartBody
from fastxfer.budget import Buffer, Priority
from fastxfer.errors import (
    InvalidConfig,
    LocalFileError,
    S3Error,
    Throttled,
    first_error,
)
from fastxfer.journal import PartRecord, UploadJournal
from fastxfer.limits import MAX_PARTS, MAX_SINGLE_PUT
from fastxfer.objectinfo import MTIME_KEY, format_mtime
from fastxfer.planning import fit_part_size, upload_part_size
from fastxfer.shielded import start_owning
from fastxfer.sources import BytesReader, FileReader, Reader, UploadSource, open_source
from fastxfer.tokenbucket import CHUNK_SIZE

if TYPE_CHECKING:
    from fastxfer.session import Session
    from fastxfer.transfer import _Tracker

log = logging.getLogger("fastxfer")


@dataclass(slots=True)
class UploadJob:
    source: UploadSource
    bucket: str
    key: str
    size: int | None
    storage_class: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    sse: str | None = None
    """Server-side encryption: ``AES256`` or ``aws:kms`` (None: the bucket default)."""
    sse_kms_key_id: str | None = None


async def run_upload(session: Session, job: UploadJob, tracker: _Tracker) -> None:
    reader = open_source(job.source, job.size)
    try:
        try:
            await _upload(session, job, reader, tracker)
        except S3Error as exc:
            # The server lost the upload (a restart of a server that keeps
            # multipart state in memory, or another client aborted it): start
            # it again, once, if the source can be read again.
            if exc.code != "NoSuchUpload" or not reader.rewind():
                raise
            log.warning(
                "s3://%s/%s: the server lost the upload; starting it again", job.bucket, job.key
            )
            tracker.progress(-tracker.bytes_done)
            tracker.parts_done = 0
            tracker.retries += 1
            await _upload(session, job, reader, tracker)
    finally:
        await reader.close()


async def _upload(session: Session, job: UploadJob, reader: Reader, tracker: _Tracker) -> None:
    cfg = session.config
    mode = cfg.effective_checksum
    metadata = dict(job.metadata)
    if (
        cfg.preserve_mtime
        and isinstance(reader, FileReader)
        and not any(k.lower() == MTIME_KEY for k in metadata)
    ):
        # rclone's convention, so either tool sees the other's uploads as unchanged.
        metadata[MTIME_KEY] = format_mtime(reader.stat.st_mtime_ns)
    extra: dict[str, Any] = {}
    if job.storage_class:
        extra["StorageClass"] = job.storage_class
    if job.content_type:
        extra["ContentType"] = job.content_type
    if job.sse:
        extra["ServerSideEncryption"] = job.sse
    if job.sse_kms_key_id:
        extra["SSEKMSKeyId"] = job.sse_kms_key_id
    tracker.size = reader.size

    pool = session.buffers
    size = reader.size
    if mode == "client" and size is not None and size >= cfg.multipart_threshold:
        # A multipart upload's user metadata is fixed when it is created, so
        # the whole-object CRC is needed first (a single PUT computes it from
        # the body it already holds).  Streams cannot be read twice: see
        # _multipart.
        if isinstance(reader, FileReader):
            crc, _ = await integrity.file_crc64nvme_parallel(reader.path)
            metadata[integrity.METADATA_KEY] = integrity.to_b64(crc)
        elif isinstance(reader, BytesReader):
            metadata[integrity.METADATA_KEY] = integrity.to_b64(integrity.crc64nvme(reader.data))

    part_size = fit_part_size(size, cfg.part_size) if size is not None else cfg.part_size
    if part_size > session.memory.limit:
        raise InvalidConfig(
            f"{job.key}: needs parts of {part_size} bytes, "
            f"above the memory limit {session.memory.limit}",
            hint="raise --memory-limit",
        )

    if size is not None and size >= cfg.multipart_threshold:
        # Parts: sized once the first answer has told how far the server is.
        await _multipart(session, job, reader, None, 0, part_size, metadata, extra, mode, tracker)
        return

    # Below the threshold (a known size) one PUT; a stream of unknown size:
    # read its first part, which decides between one PUT and multipart.
    single = size is not None
    first_len = size if size is not None else part_size
    # A known size takes the connection slot, then the memory, as every part
    # does (Session.slot_and_buffer says why).  A stream of unknown size reads
    # before it holds a connection (it may read for long): its one buffer is the
    # exception, harmless while the memory budget holds more than a part for
    # each such stream.
    held = single
    if held:
        buf = await session.slot_and_buffer(max(first_len, 1))
    else:
        buf = await pool.get(max(first_len, 1))
    try:
        n = await reader.readinto(memoryview(buf)[:first_len])
        at_eof = n < first_len or (size is not None and n == size)
        if size is None and n == first_len:
            # A stream that fills the first part exactly may still have more.
            at_eof = False
        if single or (at_eof and n < cfg.multipart_threshold):
            if size is not None and n != size:
                raise LocalFileError(
                    f"{job.key}: source gave {n} bytes, expected {size}",
                    hint="the file changed while it was read",
                )
            await reader.check_unchanged()
            await _put_single(
                session, job, memoryview(buf)[:n], metadata, extra, mode, tracker, held
            )
            pool.put(buf)
            return
    except BaseException:
        pool.put(buf)
        raise
    finally:
        if held:
            session.connections.release()
    await _multipart(session, job, reader, buf, n, part_size, metadata, extra, mode, tracker)


async def _put_single(
    session: Session,
    job: UploadJob,
    data: memoryview,
    metadata: dict[str, str],
    extra: dict[str, Any],
    mode: str,
    tracker: _Tracker,
    held_slot: bool = False,
) -> None:
    # The buffer (and a held slot) stay ours until the request returns:
    # released by the caller.
    kw = dict(extra)
    crc = integrity.crc64nvme(data) if len(data) else 0
    if mode == "client":
        metadata.setdefault(integrity.METADATA_KEY, integrity.to_b64(crc))
    elif mode == "server":
        # The algorithm too: moto (and the spec's SDK header) keeps the value only with it.
        kw["ChecksumAlgorithm"] = "CRC64NVME"
        kw["ChecksumCRC64NVME"] = integrity.to_b64(crc)
    elif mode == "md5":
        kw["ContentMD5"] = integrity.md5_b64(data)
    if len(data) > MAX_SINGLE_PUT:
        raise InvalidConfig("single PUT above 5 GiB")
    r = await session.request(
        "put_object",
        bucket=job.bucket,
        key=job.key,
        priority=Priority.DATA,
        what="upload",
        held_slot=held_slot,
        counts=tracker.requests,
        Body=_body(session, data, tracker),
        ContentLength=len(data),
        Metadata=metadata,
        **kw,
    )
    tracker.parts_total = tracker.parts_done = 1
    tracker.etag = r.get("ETag")
    tracker.checksum = integrity.to_b64(crc)
    tracker.verified = _verified(session, mode)
    tracker.progress(0, flush=True)


async def _multipart(
    session: Session,
    job: UploadJob,
    reader: Reader,
    first_buf: Buffer | None,
    first_n: int,
    part_size: int,
    metadata: dict[str, str],
    extra: dict[str, Any],
    mode: str,
    tracker: _Tracker,
) -> None:
    """Create (or resume) a multipart upload, then send the parts and complete it.

    ``first_buf`` holds a stream's first part, read before it was known to need
    parts; a source of known size comes with none, and its parts are sized here,
    after the first answer has judged the path (:func:`upload_part_size`).
    """
    tracker.multipart = True
    pool = session.buffers
    if mode == "client" and integrity.METADATA_KEY not in metadata:
        # A stream cannot be read twice for a whole-object CRC up front:
        # let the server check every part's Content-MD5 instead.
        mode = "md5"
    create_kw = dict(extra)
    if mode == "server":
        create_kw["ChecksumAlgorithm"] = "CRC64NVME"
        create_kw["ChecksumType"] = "FULL_OBJECT"
    journal = session.journal if isinstance(reader, FileReader) else None
    created_id: str | None = None  # created here, not yet handed to _parts_and_complete
    try:
        resume = None
        if journal is not None and isinstance(reader, FileReader):
            resume = await _resumable(session, job, reader, journal, mode, metadata, tracker)
        if resume is None:
            created = await _create(session, job, metadata, create_kw, tracker)
            upload_id = created_id = str(created["UploadId"])
            done: dict[int, PartRecord] = {}
            row = None
            if first_buf is None and reader.size is not None:
                part_size = upload_part_size(reader.size, session.config, session.connections.limit)
            if journal is not None and isinstance(reader, FileReader):
                row = journal.begin(
                    job.bucket,
                    job.key,
                    reader.identity(),
                    upload_id,
                    part_size,
                    mode,
                    metadata.get(integrity.METADATA_KEY),
                )
        else:
            await session.uploads.acquire(Priority.CONTROL)
            upload_id, row, done, part_size = resume
    except BaseException:
        if first_buf is not None:
            pool.put(first_buf)
        if created_id is not None:
            # Created, then failed before any part (the journal could not be
            # written): give back the open-uploads slot and leave nothing behind.
            session.uploads.release()
            await session.abort_multipart(
                job.bucket,
                job.key,
                created_id,
                what="the multipart upload of",
                counts=tracker.requests,
            )
        raise
    if reader.size is not None:
        tracker.parts_total = max(1, -(-reader.size // part_size))
    try:
        await _parts_and_complete(
            session,
            job,
            reader,
            first_buf,
            first_n,
            part_size,
            metadata,
            mode,
            tracker,
            upload_id,
            _Journaled(journal, row, done),
        )
    finally:
        session.uploads.release()
        session.pacer.upload_closed()
    session.pacer.on_upload_done()


@dataclass(slots=True)
class _Journaled:
    """The journal row of this upload (None: not journaled) and the parts resumed."""

    journal: UploadJournal | None
    row: int | None
    done: dict[int, PartRecord]

    def part_done(self, part: PartRecord) -> None:
        if self.journal is not None and self.row is not None:
            self.journal.part_done(self.row, part)

    def finish(self) -> None:
        if self.journal is not None and self.row is not None:
            self.journal.finish(self.row)
            self.row = None


async def _resumable(
    session: Session,
    job: UploadJob,
    reader: FileReader,
    journal: UploadJournal,
    mode: str,
    metadata: dict[str, str],
    tracker: _Tracker,
) -> tuple[str, int, dict[int, PartRecord], int] | None:
    """(UploadId, journal row, parts to keep, part size) if an interrupted upload can go on.

    The journal's row must describe the same source (path, size, mtime, inode),
    checksum mode and whole-object CRC, and a part size this run can use (S3's
    limits, the memory budget): it is kept, whatever this run would have
    chosen, so the parts stored stay usable.  The parts kept are those the
    server lists with the journal's size and ETag.  A changed source's
    upload is aborted (it would complete with stale bytes); a vanished one is
    forgotten.  Either way the caller starts a new upload.
    """
    entry = journal.find(job.bucket, job.key)
    if entry is None:
        return None
    where = f"s3://{job.bucket}/{job.key}"
    same = (
        entry.source == reader.identity()
        and entry.checksum_mode == mode
        and entry.whole_crc == metadata.get(integrity.METADATA_KEY)
    )
    usable = (
        reader.size is not None
        and entry.part_size <= session.memory.limit
        and fit_part_size(reader.size, entry.part_size) == entry.part_size
    )
    if not (same and usable):
        if same:
            log.warning(
                "%s: the interrupted upload's parts of %d bytes do not fit the memory "
                "limit %d (raise --memory-limit to resume it); starting over",
                where,
                entry.part_size,
                session.memory.limit,
            )
        else:
            log.warning("%s: the source changed since the interrupted upload; starting over", where)
        await session.abort_multipart(
            job.bucket,
            job.key,
            entry.upload_id,
            what="the stale multipart upload of",
            counts=tracker.requests,
        )
        journal.finish(entry.row)
        return None
    listed: dict[int, tuple[int, str]] = {}
    try:
        async for page in session.pages(
            "list_parts",
            bucket=job.bucket,
            what="list parts",
            counts=tracker.requests,
            Key=job.key,
            UploadId=entry.upload_id,
        ):
            for p in page.get("Parts", []) or []:
                listed[int(p["PartNumber"])] = (int(p["Size"]), str(p["ETag"]))
    except S3Error as exc:
        if exc.code not in ("NoSuchUpload", "NoSuchKey"):
            raise
        log.info("%s: the interrupted upload is gone from the server; starting over", where)
        journal.finish(entry.row)
        return None
    needs_crc = mode in ("server", "client")
    done = {
        n: rec
        for n, rec in entry.parts.items()
        if listed.get(n) == (rec.size, rec.etag) and (rec.crc is not None or not needs_crc)
    }
    log.info("%s: resuming the interrupted upload (%d parts already stored)", where, len(done))
    return entry.upload_id, entry.row, done, entry.part_size


async def _create(
    session: Session,
    job: UploadJob,
    metadata: dict[str, str],
    create_kw: dict[str, Any],
    tracker: _Tracker,
) -> dict[str, Any]:
    """CreateMultipartUpload holding a slot of the open-uploads budget.

    Servers throttle the number of open multipart uploads (rclone's
    --multipart-max-uploads; S3 per prefix): on SlowDown the slot is given
    back, the budget shrinks (AIMD) and the create waits its turn.
    """
    deadline = session.clock.monotonic() + session.config.throttle_timeout
    attempts = 0
    while True:
        await session.uploads.acquire(Priority.CONTROL)
        try:
            return await session.request(
                "create_multipart_upload",
                bucket=job.bucket,
                key=job.key,
                what="create upload",
                retry_throttled=False,
                counts=tracker.requests,
                Metadata=metadata,
                **create_kw,
            )
        except Throttled as exc:
            session.uploads.release()
            if session.clock.monotonic() >= deadline:
                raise
            attempts += 1
            # The shared limit shrinks (AIMD); this upload also backs off on
            # its own, exponentially with jitter, so waiters do not poll.
            # Woken early when another upload closes: that is when the
            # server has room again.
            own = min(10.0, 0.1 * 2**attempts) * (0.5 + random.random() / 2)
            delay = max(own, session.pacer.on_upload_throttle(exc.retry_after))
            await session.pacer.wait_upload_closed(delay)
        except BaseException:
            session.uploads.release()
            raise


async def _parts_and_complete(
    session: Session,
    job: UploadJob,
    reader: Reader,
    first_buf: Buffer | None,
    first_n: int,
    part_size: int,
    metadata: dict[str, str],
    mode: str,
    tracker: _Tracker,
    upload_id: str,
    journaled: _Journaled,
) -> None:
    pool = session.buffers
    done = journaled.done

    parts: dict[int, dict[str, Any]] = {
        n: {"PartNumber": n, "ETag": rec.etag} for n, rec in done.items()
    }
    crcs: dict[int, tuple[int, int]] = {
        n: (rec.crc, rec.size) for n, rec in done.items() if rec.crc is not None
    }

    def resumed(number: int, length: int) -> None:
        tracker.parts_done += 1
        tracker.bytes_resumed += length
        tracker.progress(length)

    async def send(number: int, buf: Buffer, length: int, held: bool) -> None:
        try:
            data = memoryview(buf)[:length]
            kw: dict[str, Any] = {}
            crc: int | None = None
            if mode in ("server", "client"):
                # client mode: the CRC of the bytes actually sent, compared with
                # the pre-pass value before completing (a file rewritten in place
                # with its mtime put back must not complete with a stale CRC).
                crc = await asyncio.get_running_loop().run_in_executor(
                    None, integrity.crc64nvme, data
                )
                crcs[number] = (crc, length)
            if mode == "server" and crc is not None:
                kw["ChecksumAlgorithm"] = "CRC64NVME"
                kw["ChecksumCRC64NVME"] = integrity.to_b64(crc)
            elif mode == "md5":
                kw["ContentMD5"] = await asyncio.get_running_loop().run_in_executor(
                    None, integrity.md5_b64, data
                )
            body = _body(session, data, tracker)
            r = await session.request(
                "upload_part",
                bucket=job.bucket,
                key=job.key,
                priority=Priority.DATA,
                what=f"upload part {number}",
                held_slot=held,
                counts=tracker.requests,
                UploadId=upload_id,
                PartNumber=number,
                Body=body,
                ContentLength=length,
                **kw,
            )
            entry: dict[str, Any] = {"PartNumber": number, "ETag": r["ETag"]}
            parts[number] = entry
            tracker.parts_done += 1
            journaled.part_done(PartRecord(number, length, str(r["ETag"]), crc))
        finally:
            pool.put(buf)
            if held:
                session.connections.release()

    try:
        total = 0
        number = 0
        async with asyncio.TaskGroup() as tg:
            buf: Buffer | None
            while True:
                number += 1
                rec = done.get(number)
                if number == 1 and first_buf is not None:
                    # A stream's first part, read before it was known to need parts.
                    buf, n, held = first_buf, first_n, False
                elif rec is not None and isinstance(reader, FileReader):
                    # Stored by the interrupted run: skip it, read nothing.
                    reader.skip(rec.size)
                    buf, n, held = None, rec.size, False
                else:
                    # Backpressure, as rclone's lib/multipart: take the connection
                    # slot, then the memory, and only then read the part, so parts
                    # are read no faster than they can be sent (few buffers, few
                    # fresh pages) and never beyond the memory budget.
                    buf = await session.slot_and_buffer(part_size)
                    held = True
                    try:
                        n = await reader.readinto(memoryview(buf)[:part_size])
                    except BaseException:
                        pool.put(buf)
                        session.connections.release()
                        raise
                    if n == 0:
                        pool.put(buf)
                        session.connections.release()
                        number -= 1
                        break
                if number > MAX_PARTS:
                    if buf is not None:
                        pool.put(buf)
                    if held:
                        session.connections.release()
                    raise InvalidConfig(
                        f"{job.key}: stream longer than {MAX_PARTS} parts of {part_size} bytes",
                        hint="pass size= or raise --part-size",
                    )
                total += n
                if buf is None:
                    resumed(number, n)
                else:
                    done.pop(number, None)
                    start_owning(tg, send(number, buf, n, held), _giver(session, buf, held))
                if n < part_size or (reader.size is not None and total >= reader.size):
                    break
        if reader.size is not None and total != reader.size:
            raise LocalFileError(
                f"{job.key}: source gave {total} bytes, expected {reader.size}",
                hint="the file changed while it was read",
            )
        await reader.check_unchanged()
        complete_kw: dict[str, Any] = {}
        full_crc: int | None = None
        if crcs:
            full_crc = 0
            for i in range(1, number + 1):
                c, ln = crcs[i]
                full_crc = integrity.combine(full_crc, c, ln) if i > 1 else c
        if mode == "server" and full_crc is not None:
            complete_kw["ChecksumCRC64NVME"] = integrity.to_b64(full_crc)
            complete_kw["ChecksumType"] = "FULL_OBJECT"
        elif mode == "client" and full_crc is not None:
            stored = metadata.get(integrity.METADATA_KEY)
            if stored is not None and integrity.from_b64(stored) != full_crc:
                raise LocalFileError(
                    f"{job.key}: the file changed while it was being uploaded "
                    "(the bytes sent do not match the checksum read before)",
                    hint="upload it again once it is no longer being written",
                )
        r = await session.request(
            "complete_multipart_upload",
            bucket=job.bucket,
            key=job.key,
            what="complete upload",
            counts=tracker.requests,
            UploadId=upload_id,
            MultipartUpload={"Parts": [parts[i] for i in range(1, number + 1)]},
            **complete_kw,
        )
    except BaseException as exc:
        aborted = await session.abort_multipart(
            job.bucket,
            job.key,
            upload_id,
            what="the multipart upload of",
            counts=tracker.requests,
        )
        if aborted:
            journaled.finish()  # else a later run can still resume or abort it
        if isinstance(exc, BaseExceptionGroup):
            raise first_error(exc) from exc
        raise
    journaled.finish()
    tracker.etag = r.get("ETag")
    if full_crc is not None:
        tracker.checksum = integrity.to_b64(full_crc)
    elif integrity.METADATA_KEY in metadata:
        tracker.checksum = metadata[integrity.METADATA_KEY]
    tracker.verified = _verified(session, mode)
    tracker.progress(0, flush=True)


def _giver(session: Session, buf: Buffer, held: bool) -> Callable[[], None]:
    """What a part's send gives back when it ends: its buffer, and its slot if it held one."""

    def give() -> None:
        session.buffers.put(buf)
        if held:
            session.connections.release()

    return give


def _verified(session: Session, mode: str) -> str | None:
    """What was checked, honestly: AWS S3 verifies every checksum it is sent; another
    server may ignore them (moto, s3rver accept wrong ones), so there it is 'sent'."""
    if mode == "off":
        return None
    if mode in ("server", "md5"):
        return "server" if session.config.endpoint_url is None else "sent"
    return mode


def _body(session: Session, data: memoryview, tracker: _Tracker) -> PartBody:
    bw = session.bandwidth
    stall = session.config.read_timeout
    if bw is None:
        return PartBody(data, on_sent=tracker.progress, stall_timeout=stall)
    conn = bw.new_connection_bucket()  # one request holds one connection

    async def take(n: int) -> None:
        await bw.acquire(n, "up", conn)

    # Small slices under a cap keep the rate smooth (no stop-and-go per MiB).
    return PartBody(
        data,
        on_sent=tracker.progress,
        before_send=take,
        slice_size=CHUNK_SIZE,
        stall_timeout=stall,
    )
