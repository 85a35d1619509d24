"""What an upload reads: a file, bytes in memory or an async stream, read in order
into the caller's part buffers (fastxfer/upload.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator

from fastxfer.errors import LocalFileError, translate
from fastxfer.journal import SourceId

UploadSource = str | os.PathLike[str] | bytes | bytearray | memoryview | AsyncIterable[bytes]
"""What an upload reads: a file path, bytes, or an async iterable of bytes."""


class Reader:
    """Sequential reads of a source into caller-provided buffers."""

    size: int | None = None

    async def readinto(self, buf: memoryview) -> int:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    async def check_unchanged(self) -> None:
        return None

    def rewind(self) -> bool:
        """Start again from the first byte; False if the source cannot be read twice."""
        return False


class FileReader(Reader):
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            # O_NONBLOCK: opening a FIFO for reading would otherwise block until
            # a writer appears (a hang no Ctrl-C reaches); regular files ignore it.
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise translate(exc) from exc
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(self.fd)
            if stat.S_ISDIR(st.st_mode):
                raise LocalFileError(f"{path}: is a directory", hint="use --recursive for folders")
            raise LocalFileError(
                f"{path}: not a regular file (a FIFO, socket or device)",
                hint="upload regular files; pipe a stream into a file first",
            )
        self.stat = st
        self.size = st.st_size
        self._mtime = st.st_mtime_ns
        self.offset = 0

    def identity(self) -> SourceId:
        return SourceId.of(self.path, self.stat)

    def skip(self, n: int) -> None:
        """Move past ``n`` bytes without reading them (a part resumed from the journal)."""
        self.offset += n

    def rewind(self) -> bool:
        self.offset = 0
        return True

    async def readinto(self, buf: memoryview) -> int:
        loop = asyncio.get_running_loop()
        total = 0
        while total < len(buf):
            n = await loop.run_in_executor(
                None, os.preadv, self.fd, [buf[total:]], self.offset + total
            )
            if n == 0:
                break
            total += n
        self.offset += total
        return total

    async def check_unchanged(self) -> None:
        st = os.fstat(self.fd)
        if st.st_size != self.size or st.st_mtime_ns != self._mtime:
            raise LocalFileError(
                f"{self.path} changed while it was being uploaded",
                hint="upload it again once it is no longer being written",
            )

    async def close(self) -> None:
        os.close(self.fd)


class BytesReader(Reader):
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = memoryview(data).cast("B")
        self.length = len(self.data)
        self.size = self.length
        self.offset = 0

    async def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), self.length - self.offset)
        buf[:n] = self.data[self.offset : self.offset + n]
        self.offset += n
        return n

    def rewind(self) -> bool:
        self.offset = 0
        return True


class StreamReader(Reader):
    def __init__(self, stream: AsyncIterable[bytes], size: int | None) -> None:
        self.it: AsyncIterator[bytes] = aiter(stream)
        self.size = size
        self.pending = memoryview(b"")
        self.done = False

    async def readinto(self, buf: memoryview) -> int:
        total = 0
        while total < len(buf):
            if not self.pending:
                if self.done:
                    break
                try:
                    chunk = await anext(self.it)
                except StopAsyncIteration:
                    self.done = True
                    break
                self.pending = memoryview(chunk).cast("B")
            n = min(len(self.pending), len(buf) - total)
            buf[total : total + n] = self.pending[:n]
            self.pending = self.pending[n:]
            total += n
        return total

    async def close(self) -> None:
        aclose = getattr(self.it, "aclose", None)
        if aclose is not None:
            await aclose()


def open_source(src: UploadSource, size: int | None) -> Reader:
    """A reader for ``src``; ``size``: a stream's length when the caller knows it."""
    if isinstance(src, str | os.PathLike):
        return FileReader(os.fspath(src))
    if isinstance(src, bytes | bytearray | memoryview):
        return BytesReader(src)
    return StreamReader(src, size)
