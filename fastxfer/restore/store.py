"""Restore jobs in the project's state file (:mod:`fastxfer.state`).

A file holds any number of jobs, each keyed by :func:`job_id` (a hash of what
identifies the job: bucket, prefix, keys), with one row per object.  Every
state change is committed at once (WAL, ``synchronous=NORMAL``: no fsync per
row; a crash loses at most the last few changes, which the next run repeats
harmlessly: a second RestoreObject gets 409 or 200).

An object's last error (a refused RestoreObject, a failed download) is kept
too, in ``restore_errors``, so ``restore-status`` reports what the run saw.
That table is created here if missing (``IF NOT EXISTS``: an older file gains
it, an older fastxfer ignores it) rather than by a schema migration.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from fastxfer.errors import UsageError
from fastxfer.restore.model import ObjectRecord, ObjectState
from fastxfer.state import StateDB


def job_id(spec: Mapping[str, Any]) -> str:
    """A stable id for the job identified by ``spec`` (``RestoreOptions.spec()``)."""
    return hashlib.sha256(json.dumps(dict(spec), sort_keys=True).encode()).hexdigest()[:16]


class RestoreStore:
    """The restore jobs of one state file.

    ``RestoreStore(path)`` opens (and upgrades) the file and closes it in
    :meth:`close`; ``RestoreStore(db)`` uses an open :class:`StateDB` and
    leaves closing it to its owner.
    """

    def __init__(self, db: StateDB | str | os.PathLike[str]) -> None:
        if isinstance(db, StateDB):
            self.db, self._owned = db, False
        else:
            self.db, self._owned = StateDB.open(db), True
        self.path = self.db.path

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def jobs(self) -> list[dict[str, Any]]:
        """The spec of every job in the file (oldest first), with ``id``, ``tier``, ``days``."""
        rows = self.db.query(
            "SELECT id, spec, tier, days FROM restore_jobs ORDER BY created_at, id"
        )
        return [self._spec(r) for r in rows]

    def spec(self, job: str | None = None) -> dict[str, Any] | None:
        """The spec of job ``job`` (an id) or, with None, of the file's only job.

        None when there is no such job.  Raises UsageError when ``job`` is None
        and the file holds several jobs.
        """
        if job is not None:
            row = self.db.query_one(
                "SELECT id, spec, tier, days FROM restore_jobs WHERE id = ?", (job,)
            )
            return None if row is None else self._spec(row)
        jobs = self.jobs()
        if len(jobs) > 1:
            raise UsageError(
                f"{self.path} holds {len(jobs)} restore jobs",
                hint="give the job's S3 URLs as well",
            )
        return jobs[0] if jobs else None

    @staticmethod
    def _spec(row: tuple[Any, ...]) -> dict[str, Any]:
        spec: dict[str, Any] = json.loads(row[1])
        spec["id"], spec["tier"], spec["days"] = row[0], row[2], row[3]
        return spec

    def create(
        self,
        spec: Mapping[str, Any],
        tier: str,
        days: int,
        objs: Sequence[ObjectRecord],
        *,
        created_at: float,
    ) -> str:
        """Save a new job and its objects in one transaction; returns its id."""
        jid = job_id(spec)
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO restore_jobs (id, bucket, spec, tier, days, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    jid,
                    str(spec.get("bucket", "")),
                    json.dumps(dict(spec), sort_keys=True),
                    tier,
                    days,
                    created_at,
                ),
            )
            self.db.executemany(
                "INSERT INTO restore_objects (job_id, seq, key, size, storage_class, etag,"
                " state, requested_at, expiry, downloaded) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        jid,
                        o.seq,
                        o.key,
                        o.size,
                        o.storage_class,
                        o.etag,
                        o.state.value,
                        o.requested_at,
                        o.expiry,
                        int(o.downloaded),
                    )
                    for o in objs
                ],
            )
        return jid

    def load(self, job: str) -> list[ObjectRecord]:
        """The objects of job ``job``, in job order, with their last error."""
        rows = self.db.query(
            "SELECT o.seq, o.key, o.size, o.storage_class, o.etag, o.state, o.requested_at,"
            " o.expiry, o.downloaded, e.error FROM restore_objects o"
            " LEFT JOIN restore_errors e ON e.job_id = o.job_id AND e.seq = o.seq"
            " WHERE o.job_id = ? ORDER BY o.seq",
            (job,),
        )
        return [
            ObjectRecord(
                r[0], r[1], r[2], r[3], r[4], ObjectState(r[5]), r[6], r[7], bool(r[8]), error=r[9]
            )
            for r in rows
        ]

    def save(self, job: str, o: ObjectRecord) -> None:
        """Persist the state of one object, and its error (committed at once)."""
        with self.db.transaction():
            self.db.execute(
                "UPDATE restore_objects SET state = ?, requested_at = ?, expiry = ?,"
                " downloaded = ? WHERE job_id = ? AND seq = ?",
                (o.state.value, o.requested_at, o.expiry, int(o.downloaded), job, o.seq),
            )
            if o.error is None:
                self.db.execute(
                    "DELETE FROM restore_errors WHERE job_id = ? AND seq = ?", (job, o.seq)
                )
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO restore_errors (job_id, seq, error) VALUES (?, ?, ?)",
                    (job, o.seq, o.error),
                )

    def set_tier(self, job: str, tier: str, days: int) -> None:
        """Record the tier and days of the job's latest requests (a rerun may change them)."""
        self.db.execute(
            "UPDATE restore_jobs SET tier = ?, days = ? WHERE id = ?", (tier, days, job)
        )

    def delete(self, job: str) -> None:
        """Forget job ``job`` and its objects."""
        with self.db.transaction():
            self.db.execute("DELETE FROM restore_jobs WHERE id = ?", (job,))


__all__ = ["RestoreStore", "job_id"]
