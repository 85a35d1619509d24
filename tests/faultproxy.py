"""A TCP proxy on 127.0.0.1 that breaks connections on purpose (fault injection).

Runs in the test's own event loop.  ``cut_response_after`` closes the
connection after that many bytes have gone from server to client (a GET
dying mid-body); ``cut_request_after`` does the same in the other direction
(an upload dying mid-part).  ``stall_request_after`` / ``stall_response_after``
stop moving that direction's bytes after that many (the peer stops reading:
the sender's socket buffers fill and its writes block); after
``stall_seconds`` the stalled connection is dropped on both sides, as a
server or a middlebox drops an idle flow (S3 answers RequestTimeout after
~20 s; rclone serve s3 would otherwise wait forever and block a retry of the
same part behind the stalled one).
Only the first ``faults`` connections that reach the threshold are cut or
stalled; later ones pass untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class FaultProxy:
    target_host: str
    target_port: int
    cut_response_after: int | None = None
    cut_request_after: int | None = None
    stall_request_after: int | None = None
    stall_response_after: int | None = None
    stall_seconds: float = 30.0
    faults: int = 1
    cuts: int = 0
    stalls: int = 0
    stalled_at: float | None = None
    """Loop time at which the first stall began."""
    connections: int = 0
    _server: asyncio.Server | None = None
    _unstall: asyncio.Event | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._unstall = asyncio.Event()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        assert self._unstall is not None
        self._server.close()
        self._unstall.set()  # stalled pipes drain and end on their own
        await asyncio.sleep(0.05)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            sr, sw = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            cw.close()
            self._tasks.discard(task)
            return
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
                    self._pipe(cr, sw, self.cut_request_after, cw, self.stall_request_after)
                )
                tg.create_task(
                    self._pipe(sr, cw, self.cut_response_after, sw, self.stall_response_after)
                )
        except* (OSError, _Cut):
            pass
        finally:
            for w in (cw, sw):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            self._tasks.discard(task)

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        cut_after: int | None,
        other: asyncio.StreamWriter,
        stall_after: int | None = None,
    ) -> None:
        sent = 0
        armed = cut_after is not None and self.cuts < self.faults
        stall_armed = stall_after is not None and self.stalls < self.faults
        while True:
            if stall_armed and stall_after is not None and sent >= stall_after:
                if self.stalls < self.faults:
                    self.stalls += 1
                    if self.stalled_at is None:
                        self.stalled_at = asyncio.get_running_loop().time()
                    assert self._unstall is not None
                    # Read no more until the flow is dropped or the proxy closes.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._unstall.wait(), self.stall_seconds)
                    writer.transport.abort()
                    other.transport.abort()
                    raise _Cut
                stall_armed = False
            limit = 65536
            if stall_armed and stall_after is not None:
                limit = max(1, min(limit, stall_after - sent))
            data = await reader.read(limit)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if armed and cut_after is not None and sent + len(data) > cut_after:
                if self.cuts < self.faults:
                    self.cuts += 1
                    writer.write(data[: cut_after - sent])
                    await writer.drain()
                    writer.transport.abort()
                    other.transport.abort()
                    raise _Cut
                armed = False
            writer.write(data)
            await writer.drain()
            sent += len(data)


class _Cut(Exception):
    pass
