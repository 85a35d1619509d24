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
stalled; later ones pass untouched.  ``cut_with_fin`` makes a cut a clean
close (FIN after the bytes so far: a truncated body) instead of a reset.

HTTP-aware mode (``slowdown`` set): the client->server direction is parsed
request by request (head, then a Content-Length or chunked body), each
request line is recorded in ``requests``, and the first ``slowdown_count``
requests for which ``slowdown(method, target, headers)`` is true are answered
by the proxy itself with ``503 SlowDown`` and ``Retry-After`` (their body is
read and dropped; the connection stays open, as S3 keeps it).  A client sends
a request only after it has read the previous answer (HTTP/1.1 without
pipelining), so the server->client direction is idle when the proxy answers.
The request-direction faults (cut/stall_request_after) do not apply there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

SlowdownMatch = Callable[[str, str, Mapping[str, str]], bool]
"""(method, request target, lower-cased headers) -> answer this request with 503?"""

SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>FAULTPROXY</RequestId></Error>"
)


def is_ranged_get(method: str, target: str, headers: Mapping[str, str]) -> bool:
    return method == "GET" and "range" in headers


def is_upload_part(method: str, target: str, headers: Mapping[str, str]) -> bool:
    return method == "PUT" and "partNumber=" in target and "uploadId=" in target


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
    cut_with_fin: bool = False
    slowdown: SlowdownMatch | None = None
    slowdown_count: int = 1
    retry_after: int = 1
    slowdowns: int = 0
    """Requests answered 503 SlowDown by the proxy so far."""
    requests: list[tuple[str, str]] = field(default_factory=list)
    """(method, target) of every request seen, in HTTP-aware mode."""
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
                if self.slowdown is not None:
                    tg.create_task(self._http_requests(cr, sw, cw))
                else:
                    tg.create_task(
                        self._pipe(cr, sw, self.cut_request_after, cw, self.stall_request_after)
                    )
                tg.create_task(
                    self._pipe(sr, cw, self.cut_response_after, sw, self.stall_response_after)
                )
        except* (OSError, EOFError, _Cut):  # EOFError: a request cut short (HTTP mode)
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
                    if self.cut_with_fin:
                        writer.close()  # FIN after what was written: a truncated body
                    else:
                        writer.transport.abort()
                    other.transport.abort()
                    raise _Cut
                armed = False
            writer.write(data)
            await writer.drain()
            sent += len(data)

    async def _http_requests(
        self,
        reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
        client: asyncio.StreamWriter,
    ) -> None:
        """Forward requests one by one; answer the matching ones with 503 SlowDown."""
        assert self.slowdown is not None
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                if upstream.can_write_eof():
                    upstream.write_eof()
                return
            lines = head.decode("latin-1").split("\r\n")
            method, target = lines[0].split(" ")[:2]
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            self.requests.append((method, target))
            throttle = self.slowdowns < self.slowdown_count and self.slowdown(
                method, target, headers
            )
            if throttle:
                self.slowdowns += 1  # now: other connections decide while this body is read
            sink = None if throttle else upstream
            if sink is not None:
                sink.write(head)
            await self._copy_body(reader, sink, headers)
            if throttle:
                client.write(
                    b"HTTP/1.1 503 Slow Down\r\n"
                    b"Content-Type: application/xml\r\n"
                    + f"Content-Length: {len(SLOWDOWN_BODY)}\r\n".encode()
                    + f"Retry-After: {self.retry_after}\r\n".encode()
                    + b"x-amz-request-id: FAULTPROXY\r\n\r\n"
                    + (b"" if method == "HEAD" else SLOWDOWN_BODY)
                )
                await client.drain()

    @staticmethod
    async def _copy_body(
        reader: asyncio.StreamReader,
        sink: asyncio.StreamWriter | None,
        headers: Mapping[str, str],
    ) -> None:
        """Move one request body to ``sink`` (None: read and drop it)."""

        async def move(n: int) -> None:
            while n > 0:
                data = await reader.read(min(n, 65536))
                if not data:
                    raise asyncio.IncompleteReadError(b"", n)
                n -= len(data)
                if sink is not None:
                    sink.write(data)
                    await sink.drain()

        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                line = await reader.readuntil(b"\r\n")
                if sink is not None:
                    sink.write(line)
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = await reader.readuntil(b"\r\n")
                        if sink is not None:
                            sink.write(trailer)
                        if trailer == b"\r\n":
                            break
                    break
                await move(size + 2)
        else:
            await move(int(headers.get("content-length", "0") or 0))
        if sink is not None:
            await sink.drain()


class _Cut(Exception):
    pass
