"""Which restoring objects have thawed: one LIST per 1,000 keys, HEAD as the fallback.

ListObjectsV2 with ``OptionalObjectAttributes=RestoreStatus`` reports up to
1,000 objects a request; the walk asks for exactly the span of keys still
restoring.  A server that ignores the option (an object known to be restoring
comes back without RestoreStatus) is polled with one HEAD per object from then
on.  Both answers go through one parser
(:func:`fastxfer.storage_class.parse_restore_header`; a LIST's RestoreStatus is
turned into the same header form by ``ObjectInfo.from_listing``).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from fastxfer.errors import BadCredentials, EndpointUnreachable, S3Error
from fastxfer.objectinfo import ObjectInfo
from fastxfer.restore.model import LIST_PAGE_SIZE, ObjectRecord, ObjectState, classify
from fastxfer.storage_class import parse_restore_header

if TYPE_CHECKING:
    from fastxfer.session import Session

log = logging.getLogger("fastxfer.restore")

FATAL = (BadCredentials, EndpointUnreachable)
"""Errors that end a whole job rather than one object's restore or one poll."""

OnThawed = Callable[[ObjectRecord, float | None], None]
"""Called with an object a poll saw readable and its copy's expiry (POSIX seconds)."""


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to raise for a failed task group: a fatal one first, else the first."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for e in g.exceptions:
            if isinstance(e, BaseExceptionGroup):
                walk(e)
            else:
                leaves.append(e)

    walk(group)
    for e in leaves[1:]:
        log.debug("restore: further error in the same group: %r", e)
    return next((e for e in leaves if isinstance(e, FATAL)), leaves[0])


class RestorePoller:
    """Polls a bucket for thawed objects; counts its requests in ``counts``."""

    def __init__(self, session: Session, bucket: str, counts: Counter[str]) -> None:
        self.session = session
        self.bucket = bucket
        self.counts = counts
        self.list_ok = True
        """False once the server showed it does not report RestoreStatus in LIST."""
        self.polls = 0

    @property
    def mode(self) -> str:
        """``"list"`` or ``"head"``."""
        return "list" if self.list_ok else "head"

    async def poll(
        self,
        restoring: Sequence[ObjectRecord],
        job_keys: Sequence[str],
        on_thawed: OnThawed,
    ) -> None:
        """One poll of ``restoring``; ``job_keys``: every key of the job, sorted."""
        self.polls += 1
        todo = list(restoring)
        if self.list_ok:
            unknown = await self._poll_list(todo, job_keys, on_thawed)
            if not unknown:
                return
            # An object known to be restoring came back without RestoreStatus:
            # the server ignores OptionalObjectAttributes; HEAD from now on.
            log.info("server does not report RestoreStatus in LIST; polling with HEAD")
            self.list_ok = False
            todo = unknown
        await self._poll_head(todo, on_thawed)

    async def _poll_list(
        self, restoring: list[ObjectRecord], job_keys: Sequence[str], on_thawed: OnThawed
    ) -> list[ObjectRecord]:
        """One LIST walk over the keys still restoring; returns those it could not report."""
        if not restoring:
            return []
        by_key = {o.key: o for o in restoring}
        keys = sorted(by_key)
        first, last = keys[0], keys[-1]
        # Common string prefix (not path components) of the sorted keys.
        n = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), None)
        prefix = first[: min(len(first), len(last)) if n is None else n]
        # The job knows every key: ask for exactly the keys from `first` to
        # `last`, not a full page (a server builds and we parse less XML).
        span = bisect.bisect_right(job_keys, last) - bisect.bisect_left(job_keys, first)
        seen: set[str] = set()
        pages = self.session.pages(
            "list_objects_v2",
            bucket=self.bucket,
            what="LIST restore status",
            counts=self.counts,
            Prefix=prefix,
            OptionalObjectAttributes=["RestoreStatus"],
            MaxKeys=max(1, min(LIST_PAGE_SIZE, span)),
            StartAfter=first[:-1],  # exclusive: the walk starts at `first`
        )
        try:
            async for page in pages:
                contents = page.get("Contents", []) or []
                for item in contents:
                    obj = by_key.get(item["Key"])
                    if obj is None or item.get("RestoreStatus") is None:
                        continue
                    seen.add(obj.key)
                    info = ObjectInfo.from_listing(self.bucket, item)
                    ongoing, expiry = parse_restore_header(info.restore)
                    if ongoing is False:
                        on_thawed(obj, expiry)
                if contents and contents[-1]["Key"] >= last:
                    break  # past the last key still restoring: no further page
        finally:
            aclose = getattr(pages, "aclose", None)  # an async generator: close it now
            if aclose is not None:
                await aclose()
        return [o for o in restoring if o.key not in seen]

    async def _poll_head(self, objs: list[ObjectRecord], on_thawed: OnThawed) -> None:
        async def one(obj: ObjectRecord) -> None:
            try:
                info = await self.session.head(self.bucket, obj.key, counts=self.counts)
            except FATAL:
                raise
            except S3Error as exc:
                obj.error = str(exc)
                return
            state = classify(info.storage_class, info.restore)
            if state in (ObjectState.RESTORED, ObjectState.READABLE):
                on_thawed(obj, parse_restore_header(info.restore)[1])

        try:
            async with asyncio.TaskGroup() as tg:
                for obj in objs:
                    tg.create_task(one(obj))
        except BaseExceptionGroup as eg:
            raise first_error(eg) from None


__all__ = ["FATAL", "OnThawed", "RestorePoller", "first_error"]
