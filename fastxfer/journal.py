"""The upload journal: what a killed process needs to finish its multipart uploads.

Every multipart upload from a local file is recorded in the shared state file
(:mod:`fastxfer.state`) while it is in flight: where it goes (endpoint,
bucket, key), its UploadId, the identity of the source (path, size, mtime,
inode, device), the part size and checksum mode, and each part the server has
acknowledged (number, size, ETag, CRC64NVME).  An upload that completes or is
aborted leaves no row.  After a crash or ``kill -9`` the same upload finds its
row: if the source is unchanged it asks the server which parts it holds
(ListParts), keeps those that match the journal, sends only the rest and
completes; if the source changed it aborts the old upload and starts over.

Example (what :mod:`fastxfer.upload` does)::

    journal = UploadJournal(db, endpoint="http://127.0.0.1:9000")
    entry = journal.find("bucket", "backups/db.dump")
    row = journal.begin("bucket", "backups/db.dump", source, upload_id, part_size, "client", crc)
    journal.part_done(row, 1, 16 * MiB, '"etag"', crc_of_part_1)
    journal.finish(row)  # completed or aborted
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from fastxfer.state import StateDB


@dataclass(frozen=True, slots=True)
class SourceId:
    """What identifies a local file's content well enough to resume its upload."""

    path: str
    size: int
    mtime_ns: int
    inode: int
    dev: int

    @classmethod
    def of(cls, path: str, st: os.stat_result) -> SourceId:
        return cls(os.path.abspath(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True, slots=True)
class PartRecord:
    """A part the server acknowledged: its number, size, ETag and CRC64NVME (if computed)."""

    number: int
    size: int
    etag: str
    crc: int | None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journaled multipart upload."""

    row: int
    bucket: str
    key: str
    upload_id: str
    source: SourceId
    part_size: int
    checksum_mode: str
    whole_crc: str | None
    """The whole-object CRC64NVME stored in the upload's metadata (client mode), base64."""
    parts: dict[int, PartRecord] = field(default_factory=dict)


class UploadJournal:
    """Journal rows for one endpoint in a :class:`~fastxfer.state.StateDB`.

    ``endpoint`` names the server (its URL, or ``aws:<region>``) so the same
    bucket and key on two servers never share a row.
    """

    def __init__(self, db: StateDB, endpoint: str) -> None:
        self.db = db
        self.endpoint = endpoint

    def find(self, bucket: str, key: str) -> JournalEntry | None:
        """The journaled upload to ``bucket``/``key`` on this endpoint, with its parts."""
        row = self.db.query_one(
            "SELECT id, upload_id, source_path, source_size, source_mtime_ns, source_inode,"
            " source_dev, part_size, checksum_mode, whole_crc FROM upload_journal"
            " WHERE endpoint = ? AND bucket = ? AND key = ?",
            (self.endpoint, bucket, key),
        )
        if row is None:
            return None
        entry = JournalEntry(
            row=int(row[0]),
            bucket=bucket,
            key=key,
            upload_id=str(row[1]),
            source=SourceId(str(row[2]), int(row[3]), int(row[4]), int(row[5]), int(row[6])),
            part_size=int(row[7]),
            checksum_mode=str(row[8]),
            whole_crc=row[9],
        )
        for number, size, etag, crc in self.db.query(
            "SELECT number, size, etag, crc FROM upload_journal_parts WHERE upload = ?",
            (entry.row,),
        ):
            entry.parts[int(number)] = PartRecord(
                int(number), int(size), str(etag), None if crc is None else int(crc) % 2**64
            )
        return entry

    def begin(
        self,
        bucket: str,
        key: str,
        source: SourceId,
        upload_id: str,
        part_size: int,
        checksum_mode: str,
        whole_crc: str | None,
    ) -> int:
        """Record a new multipart upload (replacing any older row for the same key)."""
        with self.db.transaction():
            self.db.execute(
                "DELETE FROM upload_journal WHERE endpoint = ? AND bucket = ? AND key = ?",
                (self.endpoint, bucket, key),
            )
            cur = self.db.execute(
                "INSERT INTO upload_journal (endpoint, bucket, key, upload_id, source_path,"
                " source_size, source_mtime_ns, source_inode, source_dev, part_size,"
                " checksum_mode, whole_crc, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.endpoint,
                    bucket,
                    key,
                    upload_id,
                    source.path,
                    source.size,
                    source.mtime_ns,
                    source.inode,
                    source.dev,
                    part_size,
                    checksum_mode,
                    whole_crc,
                    time.time(),
                ),
            )
        row = cur.lastrowid
        assert row is not None
        return row

    def part_done(self, row: int, part: PartRecord) -> None:
        """The server acknowledged ``part`` (one small write per part)."""
        self.db.execute(
            "INSERT OR REPLACE INTO upload_journal_parts (upload, number, size, etag, crc)"
            " VALUES (?, ?, ?, ?, ?)",
            # sqlite integers are signed 64-bit: a CRC64 is stored two's complement.
            (row, part.number, part.size, part.etag, _signed(part.crc)),
        )

    def finish(self, row: int) -> None:
        """The upload completed or was aborted: forget it."""
        self.db.execute("DELETE FROM upload_journal WHERE id = ?", (row,))

    def upload_ids(self, bucket: str, prefix: str = "") -> set[str]:
        """UploadIds a later run can resume (``abort-uploads`` spares them by default)."""
        rows = self.db.query(
            "SELECT key, upload_id FROM upload_journal WHERE endpoint = ? AND bucket = ?",
            (self.endpoint, bucket),
        )
        return {str(u) for k, u in rows if str(k).startswith(prefix)}


def _signed(value: int | None) -> int | None:
    if value is None:
        return None
    return value - 2**64 if value >= 2**63 else value
