"""Downloads: HEAD, then concurrent ranged GETs written with pwrite into a temp file.

The temp file sits next to the destination (same filesystem, so the final
rename is atomic); it is verified (size, and CRC64NVME when the object carries
one) before ``os.replace``.  On any failure it is deleted: the destination
never holds a partial file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import secrets
from typing import TYPE_CHECKING, Any

from fastxfer import integrity
from fastxfer.budget import Priority
from fastxfer.errors import (
    IntegrityError,
    LocalFileError,
    Throttled,
    TransferFailed,
    first_error,
    translate,
)
from fastxfer.objectinfo import ObjectInfo
from fastxfer.planning import range_size, retry_budget
from fastxfer.session import transport_errors
from fastxfer.shielded import start_owning
from fastxfer.tokenbucket import CHUNK_SIZE

if TYPE_CHECKING:
    from fastxfer.session import Session
    from fastxfer.transfer import _Tracker

log = logging.getLogger("fastxfer")


def _stream_errors() -> tuple[type[BaseException], ...]:
    """Errors while reading a response body: the range is resumed where it stopped."""
    return (*transport_errors(), IncompleteRange)


class IncompleteRange(Exception):
    """The server closed a ranged GET before sending every byte."""


def temp_path_for(dest: str) -> str:
    """``.NAME.fastxfer-PID-RANDOM.tmp`` beside ``dest``: the PID tells a later run
    whether the process that wrote it is gone (see :func:`remove_stale_temps`)."""
    d, name = os.path.split(os.path.abspath(dest))
    return os.path.join(d, f".{name}.fastxfer-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def stale_temps_in(directory: str) -> dict[str, list[str]]:
    """Temp files killed downloads left in ``directory``, by the name of the file
    each was for.  A temp file is stale when the process named in it no longer
    runs (the name carries its PID; this host's); a live process's is left alone."""
    found: dict[str, list[str]] = {}
    try:
        names = os.listdir(directory)
    except OSError:
        return found
    for entry in names:
        if not (entry.startswith(".") and entry.endswith(".tmp")) or ".fastxfer-" not in entry:
            continue
        name, _, rest = entry[1:].rpartition(".fastxfer-")
        pid_text = rest.split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        found.setdefault(name, []).append(entry)
    return found


def remove_stale_temps(dest: str, seen: dict[str, dict[str, list[str]]]) -> int:
    """Remove temp files a killed download of ``dest`` left beside it; returns how many.

    ``seen`` caches each directory's listing (the session's): a directory is
    listed once per session, not once per file downloaded into it (2,000 small
    files into one directory listed it 2,000 times: 0.4 ms of CPU a file).
    """
    d, name = os.path.split(os.path.abspath(dest))
    if d not in seen:
        seen[d] = stale_temps_in(d)
    stale = seen[d]
    removed = 0
    for entry in stale.pop(name, ()):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(d, entry))
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


async def run_download(
    session: Session,
    bucket: str,
    key: str,
    dest: str,
    tracker: _Tracker,
    size_hint: int | None = None,
) -> None:
    cfg = session.config
    _check_dest(dest)
    if size_hint is not None and size_hint < cfg.multipart_threshold:
        # Small object (size known from a LIST): one GET, no HEAD.  Its
        # response carries the metadata and checksum a HEAD would give.
        if await _download_small(session, bucket, key, dest, tracker):
            return
        tracker.retries += 1
    info = await session.head(bucket, key, counts=tracker.requests)
    note_info(tracker, info)
    fd, tmp = _open_tmp(session, dest)
    ok = False
    try:
        if info.size:
            _reserve(fd, info.size, tmp)
        crc = await _fetch_all(session, bucket, key, info, fd, tracker)
        await _commit(session, info, fd, tmp, dest, crc, tracker)
        fd = -1
        ok = True
    except OSError as exc:
        raise translate(exc) from exc
    finally:
        _cleanup(fd, tmp, ok)
    tracker.progress(0, flush=True)


def _check_dest(dest: str) -> None:
    parent = os.path.dirname(os.path.abspath(dest))
    if os.path.isdir(dest):
        raise LocalFileError(f"{dest}: is a directory", hint="give a file name, or use --recursive")
    if not os.path.isdir(parent):
        raise LocalFileError(f"{parent}: no such directory")


def note_info(tracker: _Tracker, info: ObjectInfo) -> None:
    tracker.size = info.size
    tracker.storage_class = info.storage_class
    tracker.etag = info.etag
    info.require_readable("download")


def _open_tmp(session: Session, dest: str) -> tuple[int, str]:
    if remove_stale_temps(dest, session.stale_temps):
        log.info("%s: removed a partial download a killed run left behind", dest)
    tmp = temp_path_for(dest)
    try:
        # Read-write: md5 mode reads the file back to check it against the ETag.
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        raise translate(exc) from exc
    return fd, tmp


def _cleanup(fd: int, tmp: str, ok: bool) -> None:
    if fd >= 0:
        os.close(fd)
    if not ok:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


async def _commit(
    session: Session,
    info: ObjectInfo,
    fd: int,
    tmp: str,
    dest: str,
    crc: int,
    tracker: _Tracker,
) -> None:
    """Verify the temp file, fsync it, close it and rename it into place."""
    cfg = session.config
    where = f"s3://{info.bucket}/{info.key}"
    expected = info.whole_crc64nvme
    if cfg.effective_checksum != "off" and expected is not None:
        if crc != expected:
            raise IntegrityError(
                f"{where}: CRC64NVME mismatch "
                f"(got {integrity.to_b64(crc)}, object says {integrity.to_b64(expected)}); "
                "the download was discarded",
                hint="retry; if it persists the stored object is damaged",
            )
        tracker.verified = "client"
    elif (
        cfg.effective_checksum == "md5" and info.etag.strip('"').isalnum() and "-" not in info.etag
    ):
        loop = asyncio.get_running_loop()
        digest = await loop.run_in_executor(None, _md5_file, fd, info.size)
        if digest != info.etag.strip('"'):
            raise IntegrityError(f"{where}: MD5 does not match the ETag")
        tracker.verified = "md5"
    else:
        tracker.verified = "size"
    tracker.checksum = integrity.to_b64(crc)
    st = os.fstat(fd)
    if st.st_size != info.size:
        raise IntegrityError(f"{where}: wrote {st.st_size} bytes, expected {info.size}")
    mtime = info.mtime_ns if cfg.preserve_mtime else None
    if mtime is not None:
        os.utime(fd, ns=(mtime, mtime))
    if cfg.fsync:
        await asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)
    os.close(fd)
    os.replace(tmp, dest)


async def _download_small(
    session: Session, bucket: str, key: str, dest: str, tracker: _Tracker
) -> bool:
    """One whole-object GET into a temp file; False if the stream broke (caller falls back)."""
    fd, tmp = -1, ""
    ok = False
    try:
        async with session.open_get(
            bucket, key, counts=tracker.requests, ChecksumMode="ENABLED"
        ) as resp:
            info = ObjectInfo.from_response(bucket, key, resp)
            note_info(tracker, info)
            tracker.parts_total = 1
            fd, tmp = _open_tmp(session, dest)
            _, crc = await _write_body(session, resp["Body"], fd, 0, info.size, 0, tracker)
            await _commit(session, info, fd, tmp, dest, crc, tracker)
            fd = -1
            ok = True
    except Throttled:
        return False
    except _Resumable:
        tracker.progress(-tracker.bytes_done)
        return False
    except _stream_errors():
        tracker.progress(-tracker.bytes_done)
        return False
    except OSError as exc:
        raise translate(exc) from exc
    finally:
        if tmp:
            _cleanup(fd, tmp, ok)
    tracker.parts_done = 1
    tracker.progress(0, flush=True)
    return True


def _reserve(fd: int, size: int, path: str) -> None:
    """Reserve the space up front so a full disk fails now, not at 99%.

    On tmpfs, fallocate zeroes every page before pwrite overwrites it (0.47 s
    of CPU per GiB, measured); there a free-space check stands in for it.
    """
    if _on_tmpfs(path):
        st = os.statvfs(os.path.dirname(os.path.abspath(path)))
        if st.f_bavail * st.f_frsize < size:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            os.ftruncate(fd, size)
        else:
            exc.filename = path
            raise


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "the download"


def _on_tmpfs(path: str) -> bool:
    """Whether ``path`` lives on tmpfs (Linux; False when it cannot tell)."""
    target = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    best, fstype = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mnt = fields[1].replace("\\040", " ")
                inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
                if inside and len(mnt) >= len(best):
                    best, fstype = mnt, fields[2]
    except OSError:
        return False
    return fstype == "tmpfs"


def _md5_file(fd: int, size: int) -> str:
    h = hashlib.md5(usedforsecurity=False)
    off = 0
    while off < size:
        chunk = os.pread(fd, 8 * 1024 * 1024, off)
        if not chunk:
            break
        h.update(chunk)
        off += len(chunk)
    return h.hexdigest()


async def _fetch_all(
    session: Session, bucket: str, key: str, info: ObjectInfo, fd: int, tracker: _Tracker
) -> int:
    """Fetch every range concurrently; return the CRC64NVME of the whole object."""
    cfg = session.config
    size = info.size
    if size == 0:
        tracker.parts_total = tracker.parts_done = 1
        return 0
    ranged = size >= cfg.multipart_threshold
    # Ranges sized for the connections allowed now (the tuned count): on a short
    # path a few large ones cost both sides less CPU than many small ones.
    part = range_size(size, cfg, session.connections.limit) if ranged else size
    count = -(-size // part)
    tracker.parts_total = count
    tracker.multipart = count > 1
    crcs: list[int] = [0] * count
    retryable: tuple[type[BaseException], ...] = (_Resumable, *_stream_errors())

    budget = retry_budget(cfg.max_attempts, count)
    # On a short path the tuner lets fewer ranges run at once than the count
    # allows (fastxfer/tuning.py): a stream before a connection.
    streams = session.streams if count > 1 else None

    def release() -> None:
        session.connections.release()
        if streams is not None:
            streams.release()

    async def fetch(index: int) -> None:
        try:
            start = index * part
            end = min(size, start + part)
            pos = start
            crc = 0
            attempt = 0
            while pos < end:
                before = pos
                try:
                    pos, crc = await _get_range(
                        session, bucket, key, info, fd, pos, end, crc, ranged, tracker
                    )
                except retryable as exc:
                    cause: BaseException = exc
                    if isinstance(exc, _Resumable):
                        pos, crc = exc.pos, exc.crc
                        cause = exc.cause
                    if pos > before:
                        attempt = 0  # progress was made: a fresh budget for the rest
                    attempt += 1
                    if attempt >= cfg.max_attempts or tracker.retries >= budget:
                        # Per range, and over the whole transfer: a link that fails
                        # after every bit of progress must not retry forever.
                        raise translate(cause, bucket=bucket, key=key, op="download") from cause
                    tracker.retries += 1
                    log.info("range %d-%d of %s: %s; resuming at %d", start, end, key, cause, pos)
                    await session.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                if pos == before:
                    raise TransferFailed(f"s3://{bucket}/{key}: server sent no data at {pos}")
            crcs[index] = crc
            tracker.parts_done += 1
        finally:
            release()

    try:
        async with asyncio.TaskGroup() as tg:
            for i in range(count):
                # Take the slots before creating the task so a huge object does
                # not create thousands of waiting tasks.
                if streams is not None:
                    await streams.acquire(Priority.DATA)
                try:
                    await session.connections.acquire(Priority.DATA)
                except BaseException:
                    if streams is not None:
                        streams.release()
                    raise
                start_owning(tg, fetch(i), release)
    except BaseExceptionGroup as eg:
        raise first_error(eg) from eg

    total = crcs[0]
    for i in range(1, count):
        ln = min(part, size - i * part)
        total = integrity.combine(total, crcs[i], ln)
    return total


async def _get_range(
    session: Session,
    bucket: str,
    key: str,
    info: ObjectInfo,
    fd: int,
    pos: int,
    end: int,
    crc: int,
    ranged: bool,
    tracker: _Tracker,
) -> tuple[int, int]:
    """GET [pos, end) and write it at pos; returns (new pos, running crc).

    On a stream error the exception carries the progress made so far through
    the caller's retry loop: pos and crc are updated as bytes land, so the
    caller resumes exactly where the data stopped.
    """
    kw: dict[str, Any] = {}
    if ranged or pos > 0:
        kw["Range"] = f"bytes={pos}-{end - 1}"
    if info.etag:
        kw["IfMatch"] = info.etag
    try:
        async with session.open_get(
            bucket, key, held_slot=True, counts=tracker.requests, **kw
        ) as resp:
            info.check_same_object(resp)
            return await _write_body(session, resp["Body"], fd, pos, end, crc, tracker)
    except Throttled as exc:
        raise _Resumable(pos, crc, IncompleteRange("throttled")) from exc


async def _write_body(
    session: Session, body: Any, fd: int, pos: int, end: int, crc: int, tracker: _Tracker
) -> tuple[int, int]:
    """Write a response body at [pos, end) of fd; returns (new pos, running crc).

    Bandwidth caps apply here, where the bytes arrive.  A stream error or an
    early close raises _Resumable carrying the progress made, so the caller
    can resume exactly where the data stopped.
    """
    bw = session.bandwidth
    conn = bw.new_connection_bucket() if bw is not None else None
    chunk_size = (
        session.config.io_chunk_size
        if bw is None
        else min(session.config.io_chunk_size, CHUNK_SIZE)
    )
    # The socket's chunks as they arrived, unless a cap wants them small.
    chunks = _socket_chunks(body) if bw is None else None
    try:
        while pos < end:
            if chunks is not None:
                data, _ = await chunks.readchunk()
            else:
                data = await body.read(min(chunk_size, end - pos))
            if not data:
                raise IncompleteRange(f"connection closed at byte {pos} of range ending {end}")
            n = len(data)
            if bw is not None:
                await bw.acquire(n, "down", conn)
            if pos + n > end:
                raise IntegrityError(
                    f"s3://{tracker.bucket}/{tracker.key}: server sent more bytes than asked"
                )
            try:
                os.pwrite(fd, data, pos)
            except OSError as exc:
                # Name the file, so the error says where (a local file problem, exit 3).
                exc.filename = exc.filename or _fd_path(fd)
                raise
            crc = integrity.crc64nvme(data, crc)
            pos += n
            tracker.progress(n)
    except _stream_errors() as exc:
        raise _Resumable(pos, crc, exc) from exc
    return pos, crc


def _socket_chunks(body: Any) -> Any | None:
    """The aiohttp stream under a plain aiobotocore body, or None.

    Its ``readchunk()`` hands over each chunk as the socket delivered it
    (~248 KiB here), where ``body.read(n)`` joins buffered chunks into a new
    ``bytes``: 1 GiB from rclone, 4 rounds interleaved, twice: 1,046 vs 1,019
    and 959 vs 904 MB/s, client 0.96 vs 0.99 and 1.04 vs 1.10 CPU-s/GiB.  A
    body that checks a response checksum as it is read (a subclass) is read
    through, and so is anything else.
    """
    from aiobotocore.response import AioStreamingBody

    if type(body) is not AioStreamingBody:
        return None
    content = getattr(body.raw_stream, "content", None)
    return content if hasattr(content, "readchunk") else None


class _Resumable(Exception):
    def __init__(self, pos: int, crc: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.pos = pos
        self.crc = crc
        self.cause = cause
