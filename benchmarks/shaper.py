"""A shaping TCP proxy for the high-latency profile: ``python -m benchmarks.shaper``.

Sits on 127.0.0.1 between the S3 clients and the server and makes loopback
behave like a WAN path to S3: every chunk of bytes is held for ``delay / 2``
in each direction (so a request/response round trip costs ``delay``), and
each TCP connection is capped to ``rate`` bytes/s in each direction by a
token bucket.  One connection then moves at most ``rate``; N connections up
to N x ``rate``, which is what makes concurrency pay off on real S3 and what
loopback alone hides.

Bounded and self-stopping:

- at most ``--max-connections`` connections at once (more are closed at once);
- at most ``QUEUE_CHUNKS`` chunks of ``CHUNK`` bytes queued per direction of a
  connection (backpressure: reading stops until the writer catches up, and
  TCP flow control pushes back on the sender);
- exits after ``--max-lifetime`` seconds, when its parent process goes away,
  or on SIGTERM/SIGINT.

Not a bottleneck by design, but measured: the benchmark records the proxy's
own CPU time per run (``proxy_cpu_s``), so a run where the proxy saturates a
core shows it.  Reads are up to 256 KiB so 64 connections x 8 MB/s is ~2,000
reads/s, not tens of thousands.

Run alone::

    python -m benchmarks.shaper --upstream 127.0.0.1:9000 --delay-ms 40 --rate 8MB
    # prints "listening 127.0.0.1:PORT" once ready
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import TracebackType

from fastxfer.units import parse_rate

CHUNK = 256 * 1024
"""Largest read; also the token bucket's burst (it must exceed the largest write)."""
QUEUE_CHUNKS = 8
"""Chunks in flight per direction of a connection (at most 2 MiB)."""


class TokenBucket:
    """``rate`` bytes/s with a burst of ``burst`` bytes; starts empty (no initial burst).

    ``take(n)`` may drive the level negative; the caller then sleeps off the
    debt, so the long-run rate is exact whatever the chunk sizes.
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.level = 0.0
        self.last = now

    def take(self, n: int, now: float) -> float:
        """Consume ``n`` bytes; return seconds to wait before sending them."""
        self.level = min(self.burst, self.level + (now - self.last) * self.rate)
        self.last = now
        self.level -= n
        return -self.level / self.rate if self.level < 0 else 0.0


@dataclass
class Stats:
    connections: int = 0
    refused: int = 0
    active: int = 0
    active_peak: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        return (
            f"connections={self.connections} peak={self.active_peak} refused={self.refused} "
            f"up={self.bytes_up} down={self.bytes_down} errors={self.errors} "
            f"uptime={time.monotonic() - self.started:.0f}s"
        )


@dataclass(frozen=True, slots=True)
class Shape:
    delay_s: float
    """Round-trip delay added; half of it in each direction."""
    rate: float
    """Bytes/s per connection and direction; 0 for no cap."""


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    shape: Shape,
    stats: Stats,
    up: bool,
) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(QUEUE_CHUNKS)
    one_way = shape.delay_s / 2

    async def pump_in() -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                await queue.put((loop.time() + one_way, data))
        finally:
            await queue.put(None)

    async def pump_out() -> None:
        bucket = TokenBucket(shape.rate, CHUNK, loop.time()) if shape.rate > 0 else None
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            now = loop.time()
            if bucket is not None:
                due = max(due, now + bucket.take(len(data), now))
            if due > now:
                await asyncio.sleep(due - now)
            writer.write(data)
            await writer.drain()
            if up:
                stats.bytes_up += len(data)
            else:
                stats.bytes_down += len(data)
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(pump_in())
        tg.create_task(pump_out())


class Proxy:
    def __init__(
        self, upstream: tuple[str, int], shape: Shape, max_connections: int, stats: Stats
    ) -> None:
        self.upstream = upstream
        self.shape = shape
        self.max_connections = max_connections
        self.stats = stats

    async def handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        st = self.stats
        if st.active >= self.max_connections:
            st.refused += 1
            c_writer.close()
            return
        st.connections += 1
        st.active += 1
        st.active_peak = max(st.active_peak, st.active)
        u_writer: asyncio.StreamWriter | None = None
        try:
            # The TCP handshake to S3 costs a round trip too.
            await asyncio.sleep(self.shape.delay_s)
            u_reader, u_writer = await asyncio.open_connection(*self.upstream)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_pipe(c_reader, u_writer, self.shape, st, up=True))
                tg.create_task(_pipe(u_reader, c_writer, self.shape, st, up=False))
        except (OSError, ExceptionGroup):
            st.errors += 1
        finally:
            st.active -= 1
            for w in (c_writer, u_writer):
                if w is not None:
                    w.close()


async def serve(args: argparse.Namespace) -> int:
    host, _, port = args.upstream.rpartition(":")
    lhost, _, lport = args.listen.rpartition(":")
    stats = Stats()
    shape = Shape(delay_s=args.delay_ms / 1000.0, rate=parse_rate(args.rate))
    proxy = Proxy((host, int(port)), shape, args.max_connections, stats)
    server = await asyncio.start_server(proxy.handle, lhost, int(lport), backlog=1024)
    bound = server.sockets[0].getsockname()
    print(f"listening {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    deadline = time.monotonic() + args.max_lifetime
    async with server:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if os.getppid() != parent or time.monotonic() > deadline:
                break
    print(f"stopped: {stats.line()}", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.shaper",
        description="TCP proxy adding a round-trip delay and a per-connection rate cap.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (0: any)")
    p.add_argument("--delay-ms", type=float, default=40.0, help="round-trip delay added, ms")
    p.add_argument(
        "--rate",
        default="8MB",
        help="cap per connection and direction, bytes/s as fastxfer's --bwlimit "
        "(8MB = 8e6, 8MiB = 8 x 2**20; 0: none)",
    )
    p.add_argument("--max-connections", type=int, default=512)
    p.add_argument("--max-lifetime", type=float, default=4 * 3600.0, help="seconds, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvloop

        return uvloop.run(serve(args))
    except ImportError:
        return asyncio.run(serve(args))


class ShaperProcess:
    """The proxy in a subprocess, as a context manager; ``port`` and ``pid`` once entered."""

    def __init__(
        self,
        upstream: str,
        delay_ms: float,
        rate: float,
        log_path: str,
        max_connections: int = 512,
    ) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "benchmarks.shaper",
            "--upstream",
            upstream,
            "--delay-ms",
            f"{delay_ms:g}",
            "--rate",
            f"{rate:f}",  # plain digits: parse_rate takes no exponent (8e+06)
            "--max-connections",
            str(max_connections),
        ]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> ShaperProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"shaper did not start: {line!r} (see {self.log_path})")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        with open(self.log_path, "ab") as f:
            f.write(out)


if __name__ == "__main__":
    sys.exit(main())
