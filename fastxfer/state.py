"""The project's one sqlite state file: restore jobs and the upload journal.

A :class:`StateDB` is a thin, typed layer over one ``sqlite3`` connection:

* the default file is ``<user cache dir>/fastxfer/state.sqlite``
  (:func:`default_path`); any other path can be given (``--state FILE``);
* WAL journal mode (readers never wait for the writer, and a crash loses at
  most the last few commits) with ``synchronous=NORMAL`` (no fsync per commit);
* a ``schema_version`` table and an ordered list of migrations
  (:data:`MIGRATIONS`, one SQL script per version).  Opening a file written by
  an older fastxfer applies the missing scripts in one transaction; opening a
  file written by a newer one raises :class:`~fastxfer.errors.InvalidConfig`
  instead of guessing;
* ``with db.transaction(): ...`` groups statements (``BEGIN IMMEDIATE`` ...
  ``COMMIT``, rolled back on any exception; nested blocks are savepoints);
  a statement outside a transaction commits at once.

Calls are synchronous: each is a small indexed write on a local file (tens of
microseconds with WAL), cheaper than handing it to a thread.  A connection
belongs to the thread that opened it (the event loop's).

Adding a table: append a script to :data:`MIGRATIONS` (never edit a released
one).  Scripts run inside the migration transaction, so they must not contain
``BEGIN``/``COMMIT``, ``VACUUM`` or ``PRAGMA journal_mode``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self

from fastxfer.errors import InvalidConfig, LocalFileError

log = logging.getLogger("fastxfer.state")

Params = Sequence[Any] | Mapping[str, Any]
"""Parameters of one statement: positional (``?``) or named (``:name``)."""

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: restore jobs (fastxfer.restore.store).  One row per job, keyed by a
    # hash of what identifies it (bucket, prefix, keys); one row per object.
    """
    CREATE TABLE restore_jobs (
        id TEXT PRIMARY KEY,
        bucket TEXT NOT NULL,
        spec TEXT NOT NULL,
        tier TEXT NOT NULL,
        days INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE restore_objects (
        job_id TEXT NOT NULL REFERENCES restore_jobs (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        key TEXT NOT NULL,
        size INTEGER NOT NULL,
        storage_class TEXT NOT NULL,
        etag TEXT NOT NULL,
        state TEXT NOT NULL,
        requested_at REAL,
        expiry REAL,
        downloaded INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, seq),
        UNIQUE (job_id, key)
    );
    """,
    # 2: the upload journal (fastxfer.journal): one row per multipart upload in
    # flight from a local file, one row per part the server has acknowledged.
    """
    CREATE TABLE upload_journal (
        id INTEGER PRIMARY KEY,
        endpoint TEXT NOT NULL,
        bucket TEXT NOT NULL,
        key TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        source_path TEXT NOT NULL,
        source_size INTEGER NOT NULL,
        source_mtime_ns INTEGER NOT NULL,
        source_inode INTEGER NOT NULL,
        source_dev INTEGER NOT NULL,
        part_size INTEGER NOT NULL,
        checksum_mode TEXT NOT NULL,
        whole_crc TEXT,
        created_at REAL NOT NULL,
        UNIQUE (endpoint, bucket, key)
    );
    CREATE TABLE upload_journal_parts (
        upload INTEGER NOT NULL REFERENCES upload_journal (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        crc INTEGER,
        PRIMARY KEY (upload, number)
    );
    """,
    # 3: why a restore object failed (refused restore, failed download), so
    # restore-status can report it after the process is gone.  IF NOT EXISTS:
    # a development build created it outside the migrations.
    """
    CREATE TABLE IF NOT EXISTS restore_errors (
        job_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        error TEXT NOT NULL,
        PRIMARY KEY (job_id, seq),
        FOREIGN KEY (job_id, seq) REFERENCES restore_objects (job_id, seq) ON DELETE CASCADE
    );
    """,
)
"""The schema, one script per version: version N is ``MIGRATIONS[:N]`` applied in order."""

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The schema version this fastxfer writes."""

_VERSION_TABLE: Final = """
    CREATE TABLE IF NOT EXISTS schema_version (
        version INTEGER PRIMARY KEY,
        applied_at REAL NOT NULL
    )
"""


def default_path() -> str:
    """``<user cache dir>/fastxfer/state.sqlite`` (``~/.cache/fastxfer/...`` on Linux)."""
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("fastxfer"), "state.sqlite")


def split_statements(script: str) -> list[str]:
    """The statements of an SQL script, each complete (``;`` in strings and triggers kept)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buf.strip()!r}")
    return out


class StateDB:
    """One sqlite state file (see the module docstring).

    ``StateDB.open(path)`` creates or upgrades it; use it as a context
    manager or call :meth:`close`::

        with StateDB.open() as db:
            with db.transaction():
                db.execute("INSERT INTO ...", (a, b))
            rows = db.query("SELECT ... WHERE id = ?", (job,))
    """

    def __init__(self, conn: sqlite3.Connection, path: str, version: int) -> None:
        """Use :meth:`open`."""
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self.version = version
        """The file's schema version (after the upgrade)."""
        self._depth = 0

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        migrations: Sequence[str] = MIGRATIONS,
        timeout: float = 10.0,
    ) -> Self:
        """Open (creating it and its directory if needed) and upgrade the file at ``path``.

        ``path`` None: :func:`default_path`.  ``migrations``: the schema to
        bring the file to (the project's by default; other lists are for
        tests).  ``timeout``: seconds to wait for another process's write lock.
        Raises LocalFileError when the file cannot be opened or is not a
        database, InvalidConfig when its schema is newer than ``migrations``.
        """
        where = os.fspath(path) if path is not None else default_path()
        try:
            if where != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(where)) or ".", exist_ok=True)
            conn = sqlite3.connect(where, timeout=timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise LocalFileError(
                f"cannot open the state file {where}: {exc}",
                hint="choose another file with --state",
            ) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal" and where != ":memory:":
                log.warning("state file %s: journal mode %s, not WAL", where, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            version = _migrate(conn, where, migrations)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise LocalFileError(
                    f"cannot use the state file {where}: {exc}",
                    hint="choose another file with --state, or delete it to start afresh",
                ) from exc
            raise
        return cls(conn, where, version)

    # -- statements ----------------------------------------------------------

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"state file {self.path} used after close()")
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        """Run one statement; outside :meth:`transaction` it commits at once."""
        try:
            return self.connection.execute(sql, params)
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from exc

    def executemany(self, sql: str, rows: Iterable[Params]) -> sqlite3.Cursor:
        """Run one statement per row of parameters."""
        try:
            return self.connection.executemany(sql, rows)
        except sqlite3.OperationalError as exc:
            raise self._error(exc) from exc

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Every row of a SELECT."""
        rows: list[tuple[Any, ...]] = self.execute(sql, params).fetchall()
        return rows

    def query_one(self, sql: str, params: Params = ()) -> tuple[Any, ...] | None:
        """The first row of a SELECT, or None."""
        row: tuple[Any, ...] | None = self.execute(sql, params).fetchone()
        return row

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Self]:
        """``with db.transaction():`` commit on success, roll back on any exception.

        The outermost block takes the write lock at once (``BEGIN IMMEDIATE``),
        so two processes never both read-then-write the same rows; nested
        blocks are savepoints (an inner failure undoes only the inner block).
        """
        conn = self.connection
        name = f"fx_{self._depth}"
        begin, commit, rollback = (
            ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            if self._depth == 0
            else (f"SAVEPOINT {name}", f"RELEASE {name}", f"ROLLBACK TO {name}; RELEASE {name}")
        )
        self.execute(begin)
        self._depth += 1
        try:
            yield self
            self.execute(commit)
        except BaseException:
            for stmt in rollback.split("; "):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute(stmt)
            raise
        finally:
            self._depth -= 1

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _error(self, exc: sqlite3.OperationalError) -> LocalFileError:
        return LocalFileError(
            f"state file {self.path}: {exc}",
            hint="check the disk and that no other process holds the file locked",
        )

    def __repr__(self) -> str:
        return f"<StateDB {self.path} v{self.version}>"


def _current_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _migrate(conn: sqlite3.Connection, path: str, migrations: Sequence[str]) -> int:
    """Bring the file to ``len(migrations)``; returns the version it is at."""
    target = len(migrations)
    version = _current_version(conn)  # no lock needed when nothing is to do
    if version == target:
        return version
    conn.execute("BEGIN IMMEDIATE")  # another process may be migrating: read again under lock
    try:
        conn.execute(_VERSION_TABLE)
        version = _current_version(conn)
        if version > target:
            raise InvalidConfig(
                f"state file {path} has schema version {version}; this fastxfer knows "
                f"versions up to {target}",
                hint="a newer fastxfer wrote it: upgrade fastxfer, or use another --state file",
            )
        for number in range(version + 1, target + 1):
            for stmt in split_statements(migrations[number - 1]):
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (number, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    if version < target:
        log.info("state file %s: schema upgraded from version %d to %d", path, version, target)
    return target


__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Params",
    "StateDB",
    "default_path",
    "split_statements",
]
