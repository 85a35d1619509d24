"""Cleanup that survives cancellation: with a time bound, and for tasks that never ran."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("fastxfer")


async def run_cleanup(
    coro: Coroutine[Any, Any, Any] | asyncio.Future[Any],
    *,
    timeout: float,
    what: str = "cleanup",
    left_behind: str = "",
) -> bool:
    """Run ``coro`` (or wait for a task already started) to completion even if
    the caller is cancelled meanwhile.

    Returns True if it finished without error.  A cancellation that arrives
    while the cleanup runs is re-raised once the cleanup is over (or timed
    out), so it is delayed by at most ``timeout`` seconds, never lost.  A
    failure is logged as one line naming ``what`` failed and, when given,
    ``left_behind``: what stays behind because of it and how to remove it.
    """
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    cancelled = False
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            task.cancel()
            break
        try:
            await asyncio.wait({task}, timeout=remaining)
        except asyncio.CancelledError:
            cancelled = True
    ok = False
    tail = f"; {left_behind}" if left_behind else ""
    if task.done() and not task.cancelled():
        exc = task.exception()
        if exc is None:
            ok = True
        else:
            log.warning("%s failed: %s%s", what, exc, tail)
    else:
        timed_out = loop.time() >= deadline
        # Cancelled (on timeout, or by a second interrupt): let it finish unwinding.
        try:
            await asyncio.wait({task}, timeout=1.0)
        except asyncio.CancelledError:
            cancelled = True
        if timed_out:
            log.warning("%s did not finish within %.0f s%s", what, timeout, tail)
        else:
            log.warning("%s was interrupted%s", what, tail)
    if cancelled:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise asyncio.CancelledError
    return ok


def start_owning(
    tg: asyncio.TaskGroup,
    coro: Coroutine[Any, Any, None],
    release: Callable[[], None],
) -> asyncio.Task[None]:
    """``tg.create_task(coro)`` for a coroutine that owns what was taken for it
    before it was made (a connection slot, a part buffer) and gives it back in
    a ``finally`` of its own.

    A task cancelled before its first step never runs its coroutine, so that
    ``finally`` never runs: when a TaskGroup aborts (one part failed), the
    parts created but not yet started kept their slots and buffers, and a
    long-lived manager (the duplicity backend's) had that many fewer for the
    rest of its life.  Here ``release`` runs instead, exactly when ``coro``
    never started; ``coro`` must enter its ``try`` before its first ``await``.
    """
    started = False

    async def run() -> None:
        nonlocal started
        started = True
        await coro

    def done(_: asyncio.Task[None]) -> None:
        if not started:
            coro.close()  # never awaited: closed without running a line
            release()

    try:
        task = tg.create_task(run())
    except BaseException:  # a TaskGroup already shutting down takes no new task
        coro.close()
        release()
        raise
    task.add_done_callback(done)
    return task
