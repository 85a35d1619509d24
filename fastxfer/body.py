"""Request bodies that send a part straight from its buffer.

Why not hand botocore a ``bytes``/``bytearray``?  Measured on Python 3.11:
the CRT signer wraps a bytearray body in ``BytesIO`` (a 16 MiB copy per part)
and aiohttp < Python 3.12.9 joins the headers and the whole body into one
new ``bytes`` before writing (another copy plus fresh page faults).  Together
that was ~0.5 s of CPU per GiB.  ``PartBody`` is an aiohttp ``Payload`` that
aiobotocore passes through untouched; it writes memoryview slices of the
pooled buffer, so the only copy left is the kernel's.  Writing in slices is
also where bandwidth limits and progress hook in: bytes are counted as they
reach the socket, not when a whole part is done.

It also quacks like a seekable file (``read``/``seek``/``tell``) because
botocore validates ``Body`` as "bytes, bytearray or file-like" and rewinds it
before a retry; it is never actually read through that path, since payload
signing and automatic checksums are off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

SLICE = 1024 * 1024
"""Bytes handed to the transport at a time (each write waits for drain)."""


class PartBody(Payload):
    def __init__(
        self,
        data: memoryview,
        *,
        on_sent: Callable[[int], None] | None = None,
        before_send: Callable[[int], Awaitable[None]] | None = None,
        slice_size: int = SLICE,
        stall_timeout: float | None = None,
    ) -> None:
        super().__init__(data, content_type=None)
        self._mv = data
        self._size = len(data)
        self._pos = 0
        self._on_sent = on_sent
        self._before_send = before_send
        self._slice = slice_size
        self._stall_timeout = stall_timeout
        self.sent = 0
        """Bytes handed to the transport by the current (latest) attempt."""

    # -- aiohttp Payload ---------------------------------------------------

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._mv).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        end = len(self._mv) if content_length is None else min(content_length, len(self._mv))
        if self.sent and self._on_sent is not None:
            # A retry: take back what the failed attempt reported.
            self._on_sent(-self.sent)
        self.sent = 0
        pos = 0
        try:
            while pos < end:
                n = min(self._slice, end - pos)
                if self._before_send is not None:
                    await self._before_send(n)
                if self._stall_timeout is None:
                    await writer.write(self._mv[pos : pos + n])
                else:
                    # aiohttp starts its read timeout only once the body is sent: a
                    # peer that stops reading would block this write forever.  No
                    # progress for stall_timeout seconds fails the attempt
                    # (TimeoutError), which botocore retries on a new connection.
                    async with asyncio.timeout(self._stall_timeout):
                        await writer.write(self._mv[pos : pos + n])
                pos += n
                self.sent += n
                if self._on_sent is not None:
                    self._on_sent(n)
        except BaseException:
            # A body cut short (cancelled, stalled, broken): its connection can
            # only be closed.  aiohttp closes it gracefully, which first sends
            # what the transport still buffers: to a peer that stopped reading,
            # never, and the socket stayed open (and its slice of the part
            # buffer referenced) until the peer gave up or the loop ended.
            # Drop it now.
            transport = getattr(writer, "transport", None)
            if transport is not None:
                transport.abort()
            raise

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self._mv)

    # -- the file-like face botocore checks for ----------------------------

    def __len__(self) -> int:
        return len(self._mv)

    def read(self, n: int = -1) -> bytes:
        end = len(self._mv) if n < 0 else min(len(self._mv), self._pos + n)
        out = bytes(self._mv[self._pos : end])
        self._pos = end
        return out

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._mv)}[whence]
        self._pos = max(0, min(len(self._mv), base + offset))
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<PartBody {len(self._mv)} bytes>"
