"""The local Dagster instance's storage: Dagster's SQLite storage, same files and layout, with the
event log keeping its database connections open.

Dagster's ``SqliteEventLogStorage`` opens a new SQLAlchemy engine and SQLite connection for every
read and write, and a run writes ~100 events (each mirrored to the index database, some read back
for data versions): ~1 s of a day's run went to opening connections and re-reading the database
schema (README, "Benchmarks"). Here each database keeps one connection, used under the storage's
own lock as Dagster uses its connections, in WAL mode as Dagster sets it. Configured in
``dagster_local.yaml``::

    storage:
      custom:
        module: greenstream_assets.defs.instance
        class: LocalDagsterStorage
        config:
          base_dir: {env: DAGSTER_HOME}
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import sqlalchemy as db
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster._core.storage.event_log import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import get_alembic_config
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy.pool import StaticPool

# Databases whose connection is kept: the index and the latest runs' (a run writes its own). The
# webserver reads many runs' logs; older ones are closed as newer ones open.
KEPT_DATABASES = 8


class KeptConnectionsEventLogStorage(SqliteEventLogStorage):
    """``SqliteEventLogStorage`` with one open connection per database (the index and the
    ``KEPT_DATABASES`` most recently used runs) instead of a new engine for every statement."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, db.Engine] = OrderedDict()
        self._engines_pid = os.getpid()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any):
        return cls(inst_data=inst_data, **config_value)

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[db.Connection]:
        # As the parent's: the lock is held while the connection is in use, so one thread at a
        # time uses a database's single connection.
        with self._db_lock:
            engine = self._engine(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _initdb(self, engine: db.Engine, for_index_shard: bool = False) -> None:
        # Dagster's own reads its ~90 Alembic migration scripts at every first connection to a
        # database in a process (to learn the head revision) and twice more to stamp a new one,
        # whose ~45 statements each commit on their own: ~35 ms a database, ~70 ms for each run's
        # new one. The same outcome here: a database that holds a revision is left as it is
        # (Dagster migrates only on `dagster instance migrate`); a new one is put in WAL mode and
        # gets the event log's tables and the head revision in one transaction (a crash leaves it
        # unstamped, so it is made again), the scripts read once per process. The index database's
        # first creation, and any error (another process creating the same database at once), go
        # through Dagster's own code and its retries.
        with engine.connect() as conn:
            if MigrationContext.configure(conn).get_current_revision():
                return
        if for_index_shard:
            super()._initdb(engine, for_index_shard=True)
            return
        try:
            with engine.connect() as conn:
                if conn.execute(db.text("PRAGMA journal_mode=WAL;")).scalar() == "wal":
                    conn.execute(db.text("PRAGMA synchronous=NORMAL;"))  # see _write_ahead_log
                conn.exec_driver_sql("BEGIN")
                SqlEventLogStorageMetadata.create_all(conn)
                MigrationContext.configure(conn).stamp(_migration_scripts(), "head")
                conn.exec_driver_sql("COMMIT")
        except (db.exc.DatabaseError, sqlite3.DatabaseError):
            super()._initdb(engine)

    def _engine(self, shard: str) -> db.Engine:
        if self._engines_pid != os.getpid():
            # A forked child: the parent's connections are not this process's to use or close.
            for inherited in self._engines.values():
                _leave_to_parent(inherited)
            self._engines, self._engines_pid = OrderedDict(), os.getpid()
        engine = self._engines.pop(shard, None)
        if engine is None:
            engine = _kept_engine(self.conn_string_for_shard(shard))
        self._engines[shard] = engine
        runs = [name for name in self._engines if name != INDEX_SHARD_NAME]
        for oldest in runs[: max(0, len(runs) - KEPT_DATABASES)]:
            self._engines.pop(oldest).dispose()
        return engine

    def kept_databases(self) -> list[str]:
        """The databases whose connection is open, least recently used first."""
        return list(self._engines)

    def _close_connections(self) -> None:
        with self._db_lock:
            engines, self._engines = self._engines, OrderedDict()
            if self._engines_pid == os.getpid():
                for engine in engines.values():
                    engine.dispose()

    def wipe(self) -> None:
        # Run databases are deleted: no connection may keep writing to a removed file.
        self._close_connections()
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._close_connections()


class KeptConnectionRunStorage(SqliteRunStorage):
    """``SqliteRunStorage`` with one open connection to ``runs.db`` instead of a new engine and
    connection for every read and write: a day's two runs made ~60 of them, ~2 ms each to open,
    commit and close (the last close also checkpoints the log). Used by one thread at a time under
    a lock, as the event log's; a use nested in another on the same thread gets a connection of its
    own, as Dagster's storage would give it."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._kept_lock = threading.Lock()
        self._kept_owner: int | None = None
        self._kept_engine: db.Engine | None = None
        self._kept_pid = os.getpid()
        super().__init__(conn_string, inst_data=inst_data)

    @contextlib.contextmanager
    def connect(self) -> Iterator[db.Connection]:
        if self._kept_pid != os.getpid():
            self._forked()
        if self._kept_owner == threading.get_ident():
            with super().connect() as conn:
                yield conn
            return
        with self._kept_lock:
            self._kept_owner = threading.get_ident()
            try:
                with self._engine().connect() as conn, conn.begin():
                    yield conn
            finally:
                self._kept_owner = None

    def _forked(self) -> None:
        """In a forked child: a lock of its own (a thread of the parent may have held the parent's
        at the fork) and, later, a connection of its own; the parent's is neither used nor closed."""
        if self._kept_engine is not None:
            _leave_to_parent(self._kept_engine)
        self._kept_engine, self._kept_owner = None, None
        self._kept_lock, self._kept_pid = threading.Lock(), os.getpid()

    def _engine(self) -> db.Engine:
        if self._kept_engine is None:
            self._kept_engine = _kept_engine(self._conn_string)
        return self._kept_engine

    def has_kept_connection(self) -> bool:
        return self._kept_engine is not None and self._kept_pid == os.getpid()

    def dispose(self) -> None:
        super().dispose()
        if self._kept_pid != os.getpid():
            self._forked()
        with self._kept_lock:
            engine, self._kept_engine = self._kept_engine, None
            if engine is not None:
                engine.dispose()


def _kept_engine(url: str) -> db.Engine:
    """One SQLite connection kept open (used by one thread at a time, under its storage's lock)."""
    engine = db.create_engine(
        url,
        poolclass=StaticPool,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
    )
    db.event.listen(engine, "connect", _write_ahead_log)
    return engine


def _leave_to_parent(engine: db.Engine) -> None:
    """Keep an engine a forked child inherited alive for good: freeing it would close the parent's
    SQLite connection from the child, which SQLite says never to do with a handle across a fork."""
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(engine))


def _write_ahead_log(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    """A kept connection to a database in WAL mode (as Dagster makes its event log databases, and
    ``_initdb`` a new one) syncs the log at checkpoints, not at every commit (``synchronous=NORMAL``,
    SQLite's advice for WAL); a database in another mode is left as it is. A run's ~100 events
    each committed, and waited for the disk, on two databases: ~0.5 ms a commit here. A crash of
    the process loses nothing; a power loss can lose the last events, never the database's
    integrity."""
    if dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")


@functools.cache
def _migration_scripts() -> ScriptDirectory:
    """The event log's Alembic scripts, as Dagster's ``_initdb`` reads them."""
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


class LocalDagsterStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (runs, event logs, schedules; the same files under ``base_dir``)
    with ``KeptConnectionsEventLogStorage`` as its event log. With ``base_dir: {env: DAGSTER_HOME}``
    (``dagster_local.yaml``) the files are where Dagster keeps them when ``dagster.yaml`` names no
    storage, so an instance switches to it, or back, with its history."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = KeptConnectionRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = KeptConnectionsEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        # DagsterStorage's own initialisation (DagsterSqliteStorage.__init__ would build the stock
        # event log, with its index database check, only to drop it).
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any):
        return cls.from_local(inst_data=inst_data, **config_value)
