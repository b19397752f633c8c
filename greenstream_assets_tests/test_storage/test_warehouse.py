"""The DuckDB warehouse: a day replaced atomically and idempotently."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta

import duckdb
import polars as pl
import pytest

from greenstream_assets.storage import warehouse as warehouse_module
from greenstream_assets.storage.warehouse import DuckDBWarehouse

DAY = date(2024, 3, 4)


def peaks(day: date, kw: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "reading_date": [day],
            "peak_ts": [datetime(day.year, day.month, day.day, 17, tzinfo=UTC)],
            "peak_kw": [kw],
            "meters_reporting": [3],
        }
    )


def test_replacing_a_day_twice_keeps_one_copy_and_other_days(tmp_path):
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    warehouse.ensure_schema()
    warehouse.ensure_schema()  # idempotent DDL
    warehouse.replace_day("daily_peaks", date(2024, 3, 3), peaks(date(2024, 3, 3), 9.0))
    warehouse.replace_day("daily_peaks", DAY, peaks(DAY, 1.0))
    warehouse.replace_day("daily_peaks", DAY, peaks(DAY, 2.0))
    rows = warehouse.query("SELECT reading_date, peak_kw FROM daily_peaks ORDER BY reading_date").rows()
    assert rows == [(date(2024, 3, 3), 9.0), (DAY, 2.0)]
    assert warehouse.query("SELECT max(version) FROM schema_version").item() == 3


def test_a_version_2_warehouse_loses_its_reading_date_indexes_and_keeps_its_rows(tmp_path):
    path = tmp_path / "w.duckdb"
    warehouse = DuckDBWarehouse(str(path))
    warehouse.ensure_schema()
    warehouse.replace_day("daily_peaks", DAY, peaks(DAY, 2.0))
    with duckdb.connect(str(path)) as conn:  # as schema version 2 left it
        conn.execute("CREATE INDEX meter_readings_reading_date_idx ON meter_readings (reading_date)")
        conn.execute("CREATE INDEX daily_peaks_reading_date_idx ON daily_peaks (reading_date)")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (2, now())")
    warehouse.ensure_schema()
    assert warehouse.query("SELECT index_name FROM duckdb_indexes()").height == 0
    assert warehouse.query("SELECT version FROM schema_version ORDER BY version").to_series().to_list() == [
        2,
        3,
    ]
    assert warehouse.query("SELECT reading_date, peak_kw FROM daily_peaks").rows() == [(DAY, 2.0)]


def test_a_warehouse_at_the_current_version_is_opened_without_reapplying_its_ddl(tmp_path):
    path = tmp_path / "w.duckdb"
    warehouse = DuckDBWarehouse(str(path))
    warehouse.ensure_schema()
    with duckdb.connect(str(path)) as conn:  # a change the DDL would undo, were it applied again
        conn.execute("COMMENT ON COLUMN daily_peaks.peak_kw IS 'edited'")
    warehouse.ensure_schema()
    comment = (
        "SELECT comment FROM duckdb_columns() WHERE table_name = 'daily_peaks' AND column_name = 'peak_kw'"
    )
    assert warehouse.query(comment).item() == "edited"
    assert warehouse.query("SELECT count(*) FROM schema_version").item() == 1


def test_a_new_file_gets_its_schema_on_the_first_connection_and_only_that_one_checks(tmp_path, monkeypatch):
    opened, checked = [], []
    connect, version = duckdb.connect, warehouse_module._schema_version
    monkeypatch.setattr(
        duckdb, "connect", lambda *args, **kwargs: opened.append(args) or connect(*args, **kwargs)
    )
    monkeypatch.setattr(warehouse_module, "_schema_version", lambda conn: checked.append(1) or version(conn))

    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    warehouse.replace_day("daily_peaks", DAY, peaks(DAY, 2.0))  # no ensure_schema first
    assert (len(opened), len(checked)) == (1, 1)
    assert warehouse.query("SELECT reading_date, peak_kw FROM daily_peaks").rows() == [(DAY, 2.0)]
    assert (len(opened), len(checked)) == (2, 1)
    # Another object (another step) checks the version on its own first connection.
    other = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    assert other.query("SELECT max(version) FROM schema_version").item() == 3
    assert (len(opened), len(checked)) == (3, 2)


def test_the_file_is_released_between_connections_so_another_process_can_open_it(tmp_path):
    path = tmp_path / "w.duckdb"
    warehouse = DuckDBWarehouse(str(path))
    warehouse.replace_day("daily_peaks", DAY, peaks(DAY, 2.0))
    read = [
        sys.executable,
        "-c",
        f"import duckdb; print(duckdb.connect({str(path)!r}).sql('SELECT peak_kw FROM daily_peaks').fetchall())",
    ]
    assert subprocess.run(read, capture_output=True, text=True, check=True).stdout.strip() == "[(2.0,)]"
    # While a connection is open the file is held, as by any DuckDB connection.
    with warehouse.connect():
        held = subprocess.run(read, capture_output=True, text=True)
    assert held.returncode == 1 and "lock" in held.stderr.lower()
    # And released again when it closes: the other process writes, this one reads its row.
    write = [
        sys.executable,
        "-c",
        f"import duckdb; duckdb.connect({str(path)!r}).execute('UPDATE daily_peaks SET peak_kw = 3.0')",
    ]
    subprocess.run(write, check=True)
    assert warehouse.query("SELECT peak_kw FROM daily_peaks").item() == 3.0


def test_two_files_open_at_once_each_get_their_own_schema_and_rows(tmp_path):
    first, second = DuckDBWarehouse(str(tmp_path / "a.duckdb")), DuckDBWarehouse(str(tmp_path / "b.duckdb"))
    first.replace_day("daily_peaks", DAY, peaks(DAY, 1.0))
    with first.connect() as held:
        # The second file is new while the first, with its schema, is open in this process.
        second.replace_day("daily_peaks", DAY, peaks(DAY, 2.0))
        assert held.sql("SELECT peak_kw FROM daily_peaks").fetchall() == [(1.0,)]
    assert second.query("SELECT peak_kw FROM daily_peaks").item() == 2.0
    assert second.query("SELECT count(*) FROM schema_version").item() == 1
    assert first.query("SELECT peak_kw FROM daily_peaks").item() == 1.0


def test_threads_share_an_open_file_and_it_is_released_after_the_last(tmp_path):
    path = tmp_path / "w.duckdb"
    warehouse = DuckDBWarehouse(str(path))
    warehouse.ensure_schema()
    days = [DAY + timedelta(days=k) for k in range(8)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda d: warehouse.replace_day("daily_peaks", d, peaks(d, 1.0)), days))
    assert warehouse.query("SELECT count(*) FROM daily_peaks").item() == 8
    with duckdb.connect(str(path)) as conn:  # nothing left attached in this process
        assert conn.sql("SELECT count(*) FROM daily_peaks").fetchall() == [(8,)]


def test_a_session_runs_every_statement_of_its_thread_on_one_connection(tmp_path, monkeypatch):
    path = tmp_path / "w.duckdb"
    warehouse = DuckDBWarehouse(str(path))
    warehouse.ensure_schema()
    opened = []
    connect = duckdb.connect
    monkeypatch.setattr(
        warehouse_module.duckdb, "connect", lambda *a, **k: opened.append(a) or connect(*a, **k)
    )
    with warehouse.session():
        warehouse.replace_day("daily_peaks", DAY, peaks(DAY, 1.0))
        # A failed load inside the session rolls back, and the session goes on.
        broken = peaks(DAY, 5.0).with_columns(meters_reporting=pl.lit(None, pl.Int64))
        with pytest.raises(Exception, match="NOT NULL"):
            warehouse.replace_day("daily_peaks", DAY, broken)
        warehouse.replace_day("daily_peaks", DAY + timedelta(days=1), peaks(DAY, 2.0))
        with warehouse.session():  # a session inside one is part of it
            assert warehouse.query("SELECT count(*) FROM daily_peaks").item() == 2
        assert len(opened) == 1
        # Another thread gets a connection of its own.
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(warehouse.query, "SELECT sum(peak_kw) FROM daily_peaks").result().item() == 3.0
        assert len(opened) == 2
    # Outside the session, a connection per statement, and the file is released at the end.
    assert warehouse.query("SELECT peak_kw FROM daily_peaks ORDER BY reading_date").rows() == [(1.0,), (2.0,)]
    assert len(opened) == 3
    read = [sys.executable, "-c", f"import duckdb; duckdb.connect({str(path)!r}).sql('SELECT 1')"]
    subprocess.run(read, check=True)


def test_a_load_that_fails_midway_leaves_the_previous_day(tmp_path):
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    warehouse.ensure_schema()
    warehouse.replace_day("daily_peaks", DAY, peaks(DAY, 1.0))
    broken = peaks(DAY, 5.0).with_columns(meters_reporting=pl.lit(None, pl.Int64))  # violates NOT NULL
    with pytest.raises(Exception, match="NOT NULL"):
        warehouse.replace_day("daily_peaks", DAY, broken)
    assert warehouse.query("SELECT peak_kw FROM daily_peaks").rows() == [(1.0,)]


def test_day_boundaries_do_not_depend_on_the_session_time_zone(tmp_path):
    """dagster-duckdb's naive partition bounds drift with the time zone; ours key on the DATE."""
    path = tmp_path / "w.duckdb"
    script = f"""
import datetime as dt, polars as pl
from greenstream_assets.storage import warehouse as warehouse_module
from greenstream_assets.storage.warehouse import DuckDBWarehouse
w = DuckDBWarehouse({str(path)!r}); w.ensure_schema()
for d in (dt.date(2024, 3, 4), dt.date(2024, 3, 5)):
    w.replace_day("daily_peaks", d, pl.DataFrame({{"reading_date": [d],
        "peak_ts": [dt.datetime(d.year, d.month, d.day, 23, 30, tzinfo=dt.timezone.utc)],
        "peak_kw": [1.0], "meters_reporting": [1]}}))
w.replace_day("daily_peaks", dt.date(2024, 3, 4), pl.DataFrame({{"reading_date": [dt.date(2024, 3, 4)],
    "peak_ts": [dt.datetime(2024, 3, 4, 23, 30, tzinfo=dt.timezone.utc)], "peak_kw": [2.0], "meters_reporting": [1]}}))
print(w.query("SELECT reading_date, hour(peak_ts), peak_kw FROM daily_peaks ORDER BY 1").rows())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], env={"TZ": "Asia/Tokyo", "PATH": ""}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.strip() == "[(datetime.date(2024, 3, 4), 23, 2.0), (datetime.date(2024, 3, 5), 23, 1.0)]"
    )


def test_every_connection_stores_booleans_as_roaring_bitmaps(tmp_path):
    """Booleans skip the compression methods that cost a day's load ~0.15 s of CPU to try."""
    warehouse = DuckDBWarehouse(str(tmp_path / "w.duckdb"))
    assert warehouse.query("SELECT current_setting('force_compression')").item() == "roaring"
    with warehouse.session():
        assert warehouse.query("SELECT current_setting('force_compression')").item() == "roaring"
