"""The local instance's storage (defs/instance.py): Dagster's SQLite files and layout, with the event
log keeping one connection per database."""

import collections
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as db
import yaml
from dagster._core.storage.event_log import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from sqlalchemy import event

from greenstream_assets.defs import instance as local_instance
from greenstream_assets.defs.instance import KeptConnectionRunStorage, KeptConnectionsEventLogStorage

LOCAL_CONFIG = Path(local_instance.__file__).resolve().parent.parent / "dagster_local.yaml"


@dg.op
def first() -> int:
    return 1


@dg.op
def second(value: int) -> int:
    return value + 1


@dg.job
def two_steps() -> None:
    second(first())


def home_with(path: Path, config: Path | None, monkeypatch: pytest.MonkeyPatch) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if config:
        shutil.copy(config, path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return home_with(tmp_path / "home", LOCAL_CONFIG, monkeypatch)


@pytest.fixture
def connects():
    """SQLite connections opened, by database file name."""
    counts: collections.Counter[str] = collections.Counter()

    def on_connect(dbapi_conn, _record) -> None:
        counts[Path(dbapi_conn.execute("PRAGMA database_list").fetchone()[2]).name] += 1

    event.listen(db.Engine, "connect", on_connect)
    yield counts
    event.remove(db.Engine, "connect", on_connect)


def event_types(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.dagster_event.event_type_value for entry in instance.all_logs(run_id)]


def test_the_local_config_uses_it_with_dagsters_own_layout(home):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, KeptConnectionsEventLogStorage)
        run_id = two_steps.execute_in_process(instance=instance).run_id
    assert (home / "history" / "runs.db").is_file()
    assert (home / "history" / "runs" / "index.db").is_file()
    assert (home / "history" / "runs" / f"{run_id}.db").is_file()
    assert (home / "schedules" / "schedules.db").is_file()


def test_the_run_queue_holds_a_second_run_of_a_day_until_the_first_ends(home):
    """The queue's limits as its daemon applies them (Dagster's own counter): a run of a day in
    progress blocks another run of that day, not a run of another day nor an ingestion run."""
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits

        def run(partition: str | None, status: dg.DagsterRunStatus) -> dg.DagsterRun:
            tags = {"dagster/partition": partition} if partition else {}
            return instance.create_run_for_job(two_steps, tags=tags, status=status)

        running = run("2024-03-04", dg.DagsterRunStatus.STARTED)
        queue = TagConcurrencyLimitsCounter(limits, [running])
        assert queue.is_blocked(run("2024-03-04", dg.DagsterRunStatus.NOT_STARTED))
        assert not queue.is_blocked(run("2024-03-05", dg.DagsterRunStatus.NOT_STARTED))
        assert not queue.is_blocked(run(None, dg.DagsterRunStatus.NOT_STARTED))
        assert not TagConcurrencyLimitsCounter(limits, []).is_blocked(
            run("2024-03-04", dg.DagsterRunStatus.NOT_STARTED)
        )


def test_a_run_opens_one_connection_to_its_database_and_none_to_the_index(home, connects):
    with dg.DagsterInstance.get() as instance:
        connects.clear()
        runs = [two_steps.execute_in_process(instance=instance).run_id for _ in range(2)]
        # Dagster's own event log opens a new connection for every statement (21 per run of this
        # two-step job, 4 more to the index); the kept one is opened once.
        assert {name: n for name, n in connects.items() if name != "runs.db"} == {f"{r}.db": 1 for r in runs}
        assert set(instance.event_log_storage.kept_databases()) == {"index", *runs}


def test_runs_share_one_connection_to_the_run_database(home, connects):
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, KeptConnectionRunStorage)
        connects.clear()
        runs = [two_steps.execute_in_process(instance=instance).run_id for _ in range(3)]
        # Dagster's own run storage opens a connection for every read and write (~30 a run); the
        # kept one was opened with the instance.
        assert connects["runs.db"] == 0
        assert instance.run_storage.has_kept_connection()
        assert [run.run_id for run in instance.get_runs()] == runs[::-1]
        with instance.run_storage.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1


def test_a_use_of_the_run_database_inside_another_gets_its_own_connection(home, connects):
    with dg.DagsterInstance.get() as instance:
        run_id = two_steps.execute_in_process(instance=instance).run_id
        storage = instance.run_storage
        connects.clear()
        with storage.connect() as outer:
            # Not the kept one (held by the outer use on this thread): no deadlock, no shared
            # transaction.
            assert storage.get_runs(dg.RunsFilter(run_ids=[run_id]))[0].run_id == run_id
            assert outer.exec_driver_sql("SELECT count(*) FROM runs").scalar() == 1
        assert connects["runs.db"] == 1
        assert storage.has_kept_connection()


def test_threads_share_the_run_database_one_at_a_time(home):
    with dg.DagsterInstance.get() as instance:
        storage = instance.run_storage
        errors: list[BaseException] = []

        def add(n: int) -> None:
            try:
                for i in range(20):
                    run_id = f"thread-{n}-run-{i}"
                    storage.add_run(dg.DagsterRun(job_name="two_steps", run_id=run_id))
                    storage.handle_run_event(
                        run_id,
                        dg.DagsterEvent(
                            event_type_value="PIPELINE_START", job_name="two_steps", event_specific_data=None
                        ),
                    )
                    assert storage.get_runs(dg.RunsFilter(run_ids=[run_id]))[0].status == (
                        dg.DagsterRunStatus.STARTED
                    )
            except BaseException as err:  # noqa: BLE001  (surfaced by the assertion below)
                errors.append(err)

        threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sorted(run.run_id for run in storage.get_runs()) == sorted(
            f"thread-{n}-run-{i}" for n in range(4) for i in range(20)
        )


@pytest.mark.parametrize("held", [False, True], ids=["idle", "held-by-a-thread-at-the-fork"])
def test_a_forked_child_opens_its_own_run_database_connection(home, held):
    with dg.DagsterInstance.get() as instance:
        run_id = two_steps.execute_in_process(instance=instance).run_id
        storage = instance.run_storage
        parents = id(storage._kept_engine)
        using, release = threading.Event(), threading.Event()

        def hold() -> None:
            with storage.connect():
                using.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        if held:  # a thread of the parent is inside the kept connection when the process forks
            holder.start()
            assert using.wait(30)
        pid = os.fork()
        if pid == 0:  # the child: a lock and a connection of its own; the parent's left alone
            code = 1
            try:
                runs = storage.get_runs(dg.RunsFilter(run_ids=[run_id]))
                if runs and storage.has_kept_connection():
                    code = 0 if id(storage._kept_engine) != parents else 3
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60
        while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        if waited[0] == 0:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        release.set()
        if held:
            holder.join()
        assert waited[0] == pid and os.waitstatus_to_exitcode(waited[1]) == 0
        # The parent's connection still works, and what it commits reaches another connection.
        storage.add_run(dg.DagsterRun(job_name="two_steps", run_id="after-the-fork"))
        with sqlite3.connect(home / "history" / "runs.db") as other:
            assert other.execute("SELECT count(*) FROM runs").fetchone()[0] == 2


def test_a_run_written_by_another_process_is_read_at_once(home):
    with dg.DagsterInstance.get() as reader:
        assert reader.get_runs() == []
        subprocess.run([sys.executable, "-c", WRITE_A_RUN], check=True, timeout=120)
        assert [run.status for run in reader.get_runs()] == [dg.DagsterRunStatus.SUCCESS]
        assert reader.run_storage.has_kept_connection()
    assert not reader.run_storage.has_kept_connection()  # closed with the instance


WRITE_A_RUN = """
import dagster as dg

@dg.op
def one() -> int:
    return 1

@dg.job
def another_process() -> None:
    one()

with dg.DagsterInstance.get() as instance:
    another_process.execute_in_process(instance=instance)
"""


@pytest.mark.parametrize(
    "writer_kept", [True, False], ids=["kept-writes-stock-reads", "stock-writes-kept-reads"]
)
def test_its_history_is_dagsters_own_and_back(tmp_path, monkeypatch, writer_kept):
    # The same DAGSTER_HOME, read by Dagster's default storage (no storage in dagster.yaml) and by
    # ours: an instance moves to it, or back, with its history.
    kept, stock = (LOCAL_CONFIG, None) if writer_kept else (None, LOCAL_CONFIG)
    home = home_with(tmp_path / "home", kept, monkeypatch)
    with dg.DagsterInstance.get() as writer:
        written = two_steps.execute_in_process(instance=writer)
        expected = event_types(writer, written.run_id)
        materialized = writer.get_run_records()
    (home / "dagster.yaml").unlink(missing_ok=True)
    home_with(home, stock, monkeypatch)
    with dg.DagsterInstance.get() as reader:
        assert isinstance(reader.event_log_storage, KeptConnectionsEventLogStorage) is not writer_kept
        assert [r.dagster_run.run_id for r in reader.get_run_records()] == [
            r.dagster_run.run_id for r in materialized
        ]
        assert event_types(reader, written.run_id) == expected
        assert expected[0] == "PIPELINE_START" and expected[-1] == "PIPELINE_SUCCESS"
        # And it goes on writing there.
        assert reader.get_run_by_id(two_steps.execute_in_process(instance=reader).run_id).is_success


def test_events_written_by_another_process_are_read_at_once(home):
    # The webserver and daemon keep their connections while run workers write (WAL, as Dagster
    # sets it): a kept connection sees every commit, never a stale snapshot.
    with dg.DagsterInstance.get() as reader, dg.DagsterInstance.get() as writer:
        first_run = two_steps.execute_in_process(instance=writer).run_id
        assert event_types(reader, first_run)[-1] == "PIPELINE_SUCCESS"
        second_run = two_steps.execute_in_process(instance=writer).run_id
        assert [r.dagster_run.run_id for r in reader.get_run_records()] == [second_run, first_run]
        assert event_types(reader, second_run) == event_types(writer, second_run)


def test_only_the_latest_runs_keep_their_connection(home, monkeypatch):
    monkeypatch.setattr(local_instance, "KEPT_DATABASES", 3)
    with dg.DagsterInstance.get() as instance:
        storage = instance.event_log_storage
        runs = [two_steps.execute_in_process(instance=instance).run_id for _ in range(5)]
        assert set(storage.kept_databases()) == {"index", *runs[-3:]}
        # A closed one reopens when read, and the least recently used run's goes (never the index's).
        assert event_types(instance, runs[0]) == event_types(instance, runs[4])
        assert set(storage.kept_databases()) == {"index", runs[0], runs[3], runs[4]}


def test_kept_connections_write_ahead_and_sync_the_log_at_checkpoints(home, tmp_path):
    def pragmas(storage: SqliteEventLogStorage, shard: str) -> tuple[str, int]:
        with storage._connect(shard) as conn:
            return (
                conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                conn.exec_driver_sql("PRAGMA synchronous").scalar(),
            )

    with dg.DagsterInstance.get() as instance:
        run_id = two_steps.execute_in_process(instance=instance).run_id
        storage = instance.event_log_storage
        # 1 is NORMAL: the commits of a run's events wait for no fsync.
        assert pragmas(storage, "index") == ("wal", 1)
        assert pragmas(storage, run_id) == ("wal", 1)
    # Dagster's own storage on the same files syncs at every commit (2, FULL).
    assert pragmas(SqliteEventLogStorage(str(home / "history" / "runs")), run_id) == ("wal", 2)


def test_threads_share_a_database_one_at_a_time(home):
    with dg.DagsterInstance.get() as instance:
        run_id = two_steps.execute_in_process(instance=instance).run_id
        before = len(instance.all_logs(run_id))
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for i in range(25):
                    instance.report_engine_event(f"thread {n} event {i}", instance.get_run_by_id(run_id))
            except BaseException as err:  # noqa: BLE001  (surfaced by the assertion below)
                errors.append(err)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        messages = [entry.dagster_event.message for entry in instance.all_logs(run_id)][before:]
        assert sorted(messages) == sorted(f"thread {n} event {i}" for n in range(4) for i in range(25))


def test_wipe_closes_the_connections_before_deleting_run_databases(home):
    with dg.DagsterInstance.get() as instance:
        run_id = two_steps.execute_in_process(instance=instance).run_id
        instance.wipe()
        assert instance.event_log_storage.kept_databases() == ["index"]  # reopened to empty it
        assert not (home / "history" / "runs" / f"{run_id}.db").exists()
        again = two_steps.execute_in_process(instance=instance).run_id
        assert event_types(instance, again)[-1] == "PIPELINE_SUCCESS"
        assert instance.all_logs(run_id) == []


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents(home):
    with dg.DagsterInstance.get() as instance:
        run_id = two_steps.execute_in_process(instance=instance).run_id
        storage = instance.event_log_storage
        parents = dict(storage._engines)
        pid = os.fork()
        if pid == 0:  # the child: fresh connections, the parent's left alone (not closed)
            code = 1
            try:
                engine = storage._engine(run_id)
                if storage.kept_databases() == [run_id] and engine is not parents[run_id]:
                    code = 0 if len(instance.all_logs(run_id)) > 0 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert storage._engines == parents
        assert event_types(instance, run_id)[-1] == "PIPELINE_SUCCESS"


def test_a_fresh_home_gets_dagsters_default_layout(home):
    # The same paths Dagster uses when dagster.yaml names no storage (base dir $DAGSTER_HOME).
    with dg.DagsterInstance.get() as instance:
        assert instance.get_ref().storage_data.class_name == "LocalDagsterStorage"
        assert instance.event_log_storage._base_dir == str(home / "history" / "runs")


def test_it_can_be_configured_as_the_event_log_alone(tmp_path, monkeypatch):
    # As `event_log_storage` beside Dagster's own run and schedule storage: the class configured is
    # the class built (Dagster's from_config_value would build its own).
    home = home_with(tmp_path / "home", None, monkeypatch)
    storages = {
        "run_storage": ("dagster._core.storage.runs", "SqliteRunStorage", "history"),
        "event_log_storage": (
            "greenstream_assets.defs.instance",
            "KeptConnectionsEventLogStorage",
            "history/runs",
        ),
        "schedule_storage": ("dagster._core.storage.schedules", "SqliteScheduleStorage", "schedules"),
    }
    config = {
        key: {"module": module, "class": name, "config": {"base_dir": str(home / folder)}}
        for key, (module, name, folder) in storages.items()
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage) is KeptConnectionsEventLogStorage
        run_id = two_steps.execute_in_process(instance=instance).run_id
        assert event_types(instance, run_id)[-1] == "PIPELINE_SUCCESS"
        assert set(instance.event_log_storage.kept_databases()) == {"index", run_id}
    assert (home / "history" / "runs" / f"{run_id}.db").is_file()


def database_layout(path: Path) -> tuple[list[tuple[str, str, str]], list[str], str]:
    """A SQLite file's tables and indexes (their SQL), its Alembic revision and journal mode."""
    engine = db.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            schema = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
            ).all()
            revisions = [row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    finally:
        engine.dispose()
    return [tuple(row) for row in schema], revisions, mode


def test_a_new_run_database_is_the_one_dagster_makes(tmp_path):
    # Made in one transaction with the migration scripts read once per process, instead of
    # Dagster's ~45 statements committed one by one and the scripts read twice: the same tables,
    # indexes, head revision and WAL mode as Dagster's own event log gives a new run.
    ours = KeptConnectionsEventLogStorage(str(tmp_path / "ours"))
    stock = SqliteEventLogStorage(str(tmp_path / "stock"))
    for storage in (ours, stock):
        with storage.run_connection("a-run") as conn:
            conn.exec_driver_sql("SELECT count(*) FROM event_logs").scalar()
    made, expected = (database_layout(tmp_path / folder / "a-run.db") for folder in ("ours", "stock"))
    assert made == expected
    schema, revisions, mode = made
    assert [name for kind, name, _ in schema if kind == "table"] == [
        "alembic_version",
        "asset_check_executions",
        "asset_event_tags",
        "asset_keys",
        "concurrency_limits",
        "concurrency_slots",
        "dynamic_partitions",
        "event_logs",
        "pending_steps",
        "secondary_indexes",
    ]
    assert revisions == [local_instance._migration_scripts().get_current_head()] and mode == "wal"
    ours.dispose()


def test_a_database_that_holds_a_revision_is_left_as_it_is(tmp_path):
    # As Dagster's: an older database is migrated by `dagster instance migrate`, not on connect.
    base = tmp_path / "runs"
    base.mkdir()
    engine = db.create_engine(f"sqlite:///{base / 'old-run.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('an-older-one')")
        conn.exec_driver_sql("CREATE TABLE event_logs (id INTEGER PRIMARY KEY, event TEXT)")
    engine.dispose()
    before = database_layout(base / "old-run.db")
    storage = KeptConnectionsEventLogStorage(str(base))
    with storage.run_connection("old-run") as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM event_logs").scalar() == 0
    storage.dispose()
    assert database_layout(base / "old-run.db") == before
    assert before[1] == ["an-older-one"]


def test_an_unstamped_database_is_made_again(tmp_path):
    # What a crash in the middle of Dagster's statement-by-statement creation leaves (some tables, no
    # revision), or an empty file: completed and stamped, as Dagster's own would.
    base = tmp_path / "runs"
    base.mkdir()
    engine = db.create_engine(f"sqlite:///{base / 'half.db'}")
    with engine.begin() as conn:
        SqlEventLogStorageMetadata.tables["event_logs"].create(conn)
    engine.dispose()
    (base / "empty.db").touch()
    storage = KeptConnectionsEventLogStorage(str(base))
    for name in ("half", "empty"):
        with storage.run_connection(name) as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM event_logs").scalar() == 0
    storage.dispose()
    stock = SqliteEventLogStorage(str(tmp_path / "stock"))
    with stock.run_connection("new") as conn:
        conn.exec_driver_sql("SELECT 1")
    expected = database_layout(tmp_path / "stock" / "new.db")
    assert database_layout(base / "half.db") == expected
    assert database_layout(base / "empty.db") == expected


def first_writes_at_once(base: str, run_id: str) -> list[BaseException]:
    """Two storages (as two processes have) write first to the same new run database at once."""
    storages = [KeptConnectionsEventLogStorage(base) for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def first_write(storage: KeptConnectionsEventLogStorage, n: int) -> None:
        try:
            barrier.wait()
            with storage.run_connection(run_id) as conn:
                conn.exec_driver_sql("INSERT INTO secondary_indexes (name) VALUES (?)", (f"writer-{n}",))
        except BaseException as err:  # noqa: BLE001  (surfaced by the caller's assertion)
            errors.append(err)

    threads = [threading.Thread(target=first_write, args=(s, n)) for n, s in enumerate(storages)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for storage in storages:
        storage.dispose()
    return errors


def test_processes_making_the_same_run_database_at_once_both_use_it(tmp_path):
    # The webserver and a run worker can both be first to a run's database: one makes it, the other
    # finds it made (or retries through Dagster's own creation) and both write to it.
    for attempt in range(5):
        run_id = f"run-{attempt}"
        assert first_writes_at_once(str(tmp_path / "runs"), run_id) == []
        engine = db.create_engine(f"sqlite:///{tmp_path / 'runs' / f'{run_id}.db'}")
        with engine.connect() as conn:
            assert sorted(conn.exec_driver_sql("SELECT name FROM secondary_indexes").scalars()) == [
                "writer-0",
                "writer-1",
            ]
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
        engine.dispose()
