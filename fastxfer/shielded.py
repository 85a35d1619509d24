"""Cleanup that survives cancellation, with a time bound."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("fastxfer")


async def run_cleanup(coro: Coroutine[Any, Any, Any], *, timeout: float) -> bool:
    """Run ``coro`` to completion even if the caller is cancelled meanwhile.

    Returns True if it finished without error.  A cancellation that arrives
    while the cleanup runs is re-raised once the cleanup is over (or timed
    out), so it is delayed by at most ``timeout`` seconds, never lost.
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
    if task.done() and not task.cancelled():
        exc = task.exception()
        if exc is None:
            ok = True
        else:
            log.warning("cleanup failed: %s", exc)
    else:
        # Cancelled on timeout: let it finish unwinding.
        try:
            await asyncio.wait({task}, timeout=1.0)
        except asyncio.CancelledError:
            cancelled = True
        log.warning("cleanup did not finish within %.0f s", timeout)
    if cancelled:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise asyncio.CancelledError
    return ok
