"""run_cleanup: clean-up that survives cancellation, bounded in time, and says what it left."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fastxfer.shielded import run_cleanup


async def test_a_failed_cleanup_says_what_stays_behind(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise RuntimeError("NotImplemented")

    with caplog.at_level(logging.WARNING, logger="fastxfer"):
        ok = await run_cleanup(fail(), timeout=1, what="aborting X", left_behind="parts stay")
    assert ok is False
    assert caplog.messages == ["aborting X failed: NotImplemented; parts stay"]


async def test_cleanup_finishes_although_the_caller_is_cancelled() -> None:
    done = asyncio.Event()

    async def cleanup() -> None:
        await asyncio.sleep(0.05)
        done.set()

    async def caller() -> None:
        await run_cleanup(cleanup(), timeout=5)

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done.is_set()  # the cancellation waited for the clean-up, and was not lost


async def test_a_timeout_and_an_interruption_are_told_apart(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.WARNING, logger="fastxfer"):
        assert await run_cleanup(forever(), timeout=0.05, what="aborting Y") is False
    assert caplog.messages == ["aborting Y did not finish within 0 s"]
    caplog.clear()

    # A second interrupt cancels the clean-up task itself long before its time bound.
    cleanup = asyncio.ensure_future(forever())
    with caplog.at_level(logging.WARNING, logger="fastxfer"):
        waiter = asyncio.ensure_future(run_cleanup(cleanup, timeout=30, what="aborting Z"))
        await asyncio.sleep(0.01)
        cleanup.cancel()
        assert await waiter is False
    assert caplog.messages == ["aborting Z was interrupted"]
