"""The sqlite state file: migrations, refusal of newer schemas, WAL, transactions, readers."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator

import pytest

from fastxfer import InvalidConfig, LocalFileError
from fastxfer.state import MIGRATIONS, SCHEMA_VERSION, StateDB, default_path, split_statements

V1 = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
V2 = """
    ALTER TABLE items ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX items_by_name ON items (name);
    UPDATE items SET size = length(name);
"""


@pytest.fixture
def path(work_dir: str) -> str:
    return os.path.join(work_dir, "sub", "state.sqlite")


@pytest.fixture
def db(path: str) -> Iterator[StateDB]:
    with StateDB.open(path) as d:
        yield d


def versions(path: str) -> list[int]:
    with sqlite3.connect(path) as raw:
        return [r[0] for r in raw.execute("SELECT version FROM schema_version ORDER BY version")]


def test_new_file_gets_the_project_schema(path: str, db: StateDB) -> None:
    assert os.path.isfile(path)  # the directory was created
    assert db.version == SCHEMA_VERSION == len(MIGRATIONS)
    assert versions(path) == list(range(1, SCHEMA_VERSION + 1))
    tables = {r[0] for r in db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"schema_version", "restore_jobs", "restore_objects"} <= tables


def test_default_path_is_in_the_user_cache_dir() -> None:
    import platformdirs

    assert default_path() == os.path.join(platformdirs.user_cache_dir("fastxfer"), "state.sqlite")


def test_migration_from_n_to_n_plus_1_keeps_the_data(path: str) -> None:
    with StateDB.open(path, migrations=[V1]) as db:
        assert db.version == 1
        db.executemany("INSERT INTO items (name) VALUES (?)", [("a",), ("bcd",)])
    with StateDB.open(path, migrations=[V1, V2]) as db:  # an older file, newer code
        assert db.version == 2
        assert db.query("SELECT name, size FROM items ORDER BY id") == [("a", 1), ("bcd", 3)]
    assert versions(path) == [1, 2]
    with StateDB.open(path, migrations=[V1, V2]) as db:  # nothing left to do
        assert db.version == 2
    assert versions(path) == [1, 2]


def test_a_failing_migration_changes_nothing(path: str) -> None:
    with StateDB.open(path, migrations=[V1]) as db:
        db.execute("INSERT INTO items (name) VALUES ('a')")
    broken = "ALTER TABLE items ADD COLUMN x INTEGER; INSERT INTO nowhere VALUES (1);"
    with pytest.raises(LocalFileError, match="no such table: nowhere"):
        StateDB.open(path, migrations=[V1, broken])
    with StateDB.open(path, migrations=[V1]) as db:
        assert db.version == 1
        assert [r[1] for r in db.query("PRAGMA table_info(items)")] == ["id", "name"]


def test_newer_schema_is_refused(path: str) -> None:
    StateDB.open(path, migrations=[V1, V2]).close()
    with pytest.raises(
        InvalidConfig, match="schema version 2; this fastxfer knows versions up to 1"
    ):
        StateDB.open(path, migrations=[V1])
    assert versions(path) == [1, 2]  # untouched


def test_not_a_database(work_dir: str) -> None:
    bad = os.path.join(work_dir, "junk.sqlite")
    with open(bad, "wb") as f:
        f.write(b"this is not sqlite" * 100)
    with pytest.raises(LocalFileError, match=r"junk\.sqlite"):
        StateDB.open(bad)


def test_wal_mode(path: str, db: StateDB) -> None:
    assert db.query_one("PRAGMA journal_mode") == ("wal",)
    assert os.path.exists(path + "-wal")


def _fail_in_transaction(db: StateDB, name: str) -> None:
    with db.transaction():
        db.execute("INSERT INTO items (name) VALUES (?)", (name,))
        raise RuntimeError("boom")


def test_transactions_commit_roll_back_and_nest(path: str) -> None:
    with StateDB.open(path, migrations=[V1]) as db:
        with db.transaction():
            db.execute("INSERT INTO items (name) VALUES ('kept')")
        with pytest.raises(RuntimeError):
            _fail_in_transaction(db, "lost")
        with db.transaction():
            db.execute("INSERT INTO items (name) VALUES ('outer')")
            with pytest.raises(RuntimeError):
                _fail_in_transaction(db, "inner")  # a savepoint: only this is undone
        names = [r[0] for r in db.query("SELECT name FROM items ORDER BY id")]
        assert names == ["kept", "outer"]


def test_readers_see_committed_data_while_a_writer_holds_its_transaction(path: str) -> None:
    with StateDB.open(path, migrations=[V1]) as writer:
        writer.execute("INSERT INTO items (name) VALUES ('committed')")
        errors: list[BaseException] = []
        seen: list[list[tuple[str, ...]]] = []
        barrier = threading.Barrier(4)

        def read() -> None:
            try:
                # timeout 0: a reader that had to wait for the writer would fail
                with StateDB.open(path, migrations=[V1], timeout=0) as reader:
                    barrier.wait(5)
                    seen.append(reader.query("SELECT name FROM items"))
                    barrier.wait(5)
            except BaseException as exc:
                errors.append(exc)

        with writer.transaction():
            writer.execute("INSERT INTO items (name) VALUES ('uncommitted')")
            threads = [threading.Thread(target=read) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
        assert not errors
        assert seen == [[("committed",)]] * 4
        with StateDB.open(path, migrations=[V1]) as later:
            assert len(later.query("SELECT name FROM items")) == 2


def test_second_writer_waits_for_the_first(path: str) -> None:
    with StateDB.open(path, migrations=[V1]) as a, StateDB.open(path, migrations=[V1]) as b:
        with a.transaction():
            a.execute("INSERT INTO items (name) VALUES ('a')")
            b_fast = StateDB.open(path, migrations=[V1], timeout=0)
            try:
                with pytest.raises(LocalFileError, match="locked"), b_fast.transaction():
                    pass
            finally:
                b_fast.close()
        with b.transaction():  # free again
            b.execute("INSERT INTO items (name) VALUES ('b')")
        assert len(a.query("SELECT * FROM items")) == 2


def test_closed_db_refuses_use(db: StateDB) -> None:
    db.close()
    db.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        db.execute("SELECT 1")


def test_split_statements_keeps_semicolons_in_strings_and_triggers() -> None:
    script = """
        CREATE TABLE t (x TEXT);
        INSERT INTO t VALUES ('a;b');
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = x || ';'; END;
    """
    stmts = split_statements(script)
    assert len(stmts) == 3
    assert stmts[1] == "INSERT INTO t VALUES ('a;b');"
    assert stmts[2].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('open")
