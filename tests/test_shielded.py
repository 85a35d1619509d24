"""run_cleanup: clean-up that survives cancellation, bounded in time, and says what it left."""

from __future__ import annotations

import asyncio
import functools
import logging

import pytest

from fastxfer.shielded import run_cleanup, start_owning


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


async def _abort_dispatch(*, let_them_start: bool) -> list[str]:
    """Three parts made with start_owning, then the dispatching side fails (or is
    interrupted): what each part's own ``finally`` ("pN") or its release ("rN") said."""
    released: list[str] = []

    async def part(name: str) -> None:
        try:
            await asyncio.sleep(10)
        finally:
            released.append(name)

    async def dispatch() -> None:
        async with asyncio.TaskGroup() as tg:
            for i in range(3):
                start_owning(tg, part(f"p{i}"), functools.partial(released.append, f"r{i}"))
            if let_them_start:
                await asyncio.sleep(0.01)
            raise RuntimeError("dispatch failed")

    with pytest.raises(ExceptionGroup):
        await dispatch()
    return sorted(released)


async def test_a_task_cancelled_before_it_ran_gives_back_what_it_owned() -> None:
    """A TaskGroup that aborts cancels the tasks not yet started: their own
    ``finally`` never runs, so start_owning's release must (only for those)."""
    # Failing in the same step: none of the three has run a line.
    assert await _abort_dispatch(let_them_start=False) == ["r0", "r1", "r2"]


async def test_a_task_that_ran_is_not_released_twice() -> None:
    assert await _abort_dispatch(let_them_start=True) == ["p0", "p1", "p2"]


async def test_a_started_task_releases_in_its_own_finally_only() -> None:
    released: list[str] = []

    async def part() -> None:
        try:
            await asyncio.sleep(0.01)
        finally:
            released.append("own")

    async with asyncio.TaskGroup() as tg:
        start_owning(tg, part(), lambda: released.append("helper"))
    assert released == ["own"]
