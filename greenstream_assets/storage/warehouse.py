"""Where rows go: the relational warehouse behind one interface (DuckDB file now, PostgreSQL next).

Table and column names are constants of this module, never user input; values are always bound
parameters. A day is replaced in one transaction: readers see the old day or the new one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import duckdb
import polars as pl

# 3: no ART index on reading_date. Days are loaded whole, so each row group's min/max (DuckDB's
# zonemaps) already finds a day; an ART index over one value per day only slowed every load.
SCHEMA_VERSION = 3

# table -> (column, DuckDB type, comment); every table has reading_date, the day it belongs to.
TABLES: dict[str, list[tuple[str, str, str]]] = {
    "meter_readings": [
        ("meter_id", "VARCHAR NOT NULL", "Meter identifier as sent, trimmed"),
        ("reading_ts", "TIMESTAMPTZ NOT NULL", "Instant of the reading, UTC"),
        ("reading_date", "DATE NOT NULL", "UTC day of reading_ts: the day partition"),
        ("local_date", "DATE NOT NULL", "Day of the reading in the utility timezone"),
        ("local_hour", "TINYINT NOT NULL", "Hour of the reading in the utility timezone"),
        ("energy_kw", "DOUBLE", "Reading in kW (W divided by 1000); NULL when missing"),
        ("is_missing", "BOOLEAN NOT NULL", "The meter sent no value; excluded from peaks"),
        ("is_anomaly", "BOOLEAN NOT NULL", "Above the configured maximum kW; excluded from peaks"),
        ("is_faulty", "BOOLEAN NOT NULL", "Part of a near-zero run long enough to call the meter faulty"),
        ("is_peak_period", "BOOLEAN NOT NULL", "Inside the tariff peak window (local time)"),
        ("source_file", "VARCHAR NOT NULL", "Landing-zone key of the file the row came from"),
        ("line_number", "BIGINT NOT NULL", "Line of the row in that file (header is line 1)"),
    ],
    "faulty_meters": [
        ("reading_date", "DATE NOT NULL", "Day partition the period was found in"),
        ("meter_id", "VARCHAR NOT NULL", "Meter stuck at or near zero"),
        ("start_ts", "TIMESTAMPTZ NOT NULL", "First near-zero reading of the period, UTC"),
        ("end_ts", "TIMESTAMPTZ NOT NULL", "Last near-zero reading of the period, UTC"),
        ("readings", "INTEGER NOT NULL", "Number of near-zero readings in the period"),
    ],
    "daily_peaks": [
        ("reading_date", "DATE NOT NULL", "Day partition (UTC)"),
        ("peak_ts", "TIMESTAMPTZ", "Instant of the highest total demand across meters"),
        ("peak_kw", "DOUBLE", "Total kW at peak_ts; missing and anomalous readings excluded"),
        ("meters_reporting", "INTEGER NOT NULL", "Meters whose readings make the peak total"),
    ],
    "meter_daily_peaks": [
        ("reading_date", "DATE NOT NULL", "Day partition (UTC)"),
        ("meter_id", "VARCHAR NOT NULL", "Meter"),
        ("peak_kw", "DOUBLE", "The meter's highest actual reading of the day (kW); anomalies excluded"),
        ("peak_ts", "TIMESTAMPTZ", "Instant of peak_kw, UTC (earliest on a tie)"),
        ("energy_kwh", "DOUBLE", "Energy of the day: kW x interval hours, estimated intervals included"),
        ("peak_period_kwh", "DOUBLE", "Energy inside the tariff peak window"),
        ("off_peak_kwh", "DOUBLE", "Energy outside the tariff peak window"),
        ("average_kw", "DOUBLE", "Mean kW over the intervals used"),
        ("load_factor", "DOUBLE", "average_kw / peak_kw; NULL when the peak is 0 or unknown"),
        ("intervals_used", "INTEGER NOT NULL", "Intervals in energy_kwh"),
        ("estimated_intervals_used", "INTEGER NOT NULL", "Of those, intervals estimated by VEE"),
        ("peak_includes_estimated", "BOOLEAN NOT NULL", "Whether estimated readings could set peak_kw"),
    ],
    "faulty_incident_days": [
        ("reading_date", "DATE NOT NULL", "The day whose computation reported this state of the incident"),
        ("meter_id", "VARCHAR NOT NULL", "Meter stuck at or near zero"),
        (
            "start_ts",
            "TIMESTAMPTZ NOT NULL",
            "First near-zero reading of the incident (may be on an earlier day)",
        ),
        ("end_ts", "TIMESTAMPTZ", "Last near-zero reading once the meter recovered; NULL while open"),
        ("last_zero_ts", "TIMESTAMPTZ NOT NULL", "Latest near-zero reading seen so far"),
        ("duration_hours", "DOUBLE NOT NULL", "last_zero_ts - start_ts in hours"),
        ("status", "VARCHAR NOT NULL", "open (still stuck at the end of the day) or closed"),
        ("readings", "INTEGER NOT NULL", "Near-zero readings in the incident so far"),
    ],
    "meter_completeness": [
        ("reading_date", "DATE NOT NULL", "Day partition"),
        ("meter_id", "VARCHAR NOT NULL", "Meter"),
        (
            "expected_intervals",
            "INTEGER NOT NULL",
            "Intervals in the local day (92/100 on DST days at 15 min)",
        ),
        ("received_intervals", "INTEGER NOT NULL", "Intervals with an actual value"),
        ("missing_intervals", "INTEGER NOT NULL", "expected - received"),
        ("completeness_ratio", "DOUBLE NOT NULL", "received / expected"),
    ],
    "daily_quality": [
        ("reading_date", "DATE NOT NULL", "Day partition"),
        ("rows_in", "BIGINT NOT NULL", "Raw rows of the day"),
        ("rows_kept", "BIGINT NOT NULL", "Rows in meter_readings"),
        ("rows_quarantined", "BIGINT NOT NULL", "Rows in the quarantine"),
        ("rows_collapsed", "BIGINT NOT NULL", "Exact duplicates collapsed"),
        ("invalid_rows", "BIGINT NOT NULL", "= rows_quarantined"),
        ("invalid_units", "BIGINT NOT NULL", "Quarantined: invalid_unit"),
        ("invalid_timestamps", "BIGINT NOT NULL", "Quarantined: invalid_timestamp or timestamp_out_of_range"),
        ("conflicting_duplicates", "BIGINT NOT NULL", "Quarantined: conflicting_duplicate"),
        ("negative_values", "BIGINT NOT NULL", "Quarantined: negative_value"),
        ("missing_values", "BIGINT NOT NULL", "Kept with is_missing"),
        ("anomalies", "BIGINT NOT NULL", "Kept with is_anomaly"),
        ("faulty_meters", "BIGINT NOT NULL", "Meters with a faulty period that day"),
        ("estimated_intervals", "BIGINT NOT NULL", "Intervals estimated by VEE"),
    ],
}
# Indexes of earlier schema versions, dropped by ensure_schema.
DROPPED_INDEXES = [f"{table}_reading_date_idx" for table in TABLES]
# The faulty-meter registry: one row per incident, in the state its latest day reported.
VIEWS = {
    "faulty_meter_incidents": (
        "SELECT meter_id, start_ts, end_ts, duration_hours, status, readings, last_zero_ts, "
        "reading_date AS last_reported_date FROM ("
        "SELECT *, row_number() OVER (PARTITION BY meter_id, start_ts ORDER BY reading_date DESC) AS rn "
        "FROM faulty_incident_days) latest WHERE rn = 1"
    ),
}


DUCK_TO_POLARS = {
    "VARCHAR": pl.String,
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"),
    "DATE": pl.Date,
    "TINYINT": pl.Int8,
    "DOUBLE": pl.Float64,
    "BOOLEAN": pl.Boolean,
    "BIGINT": pl.Int64,
    "INTEGER": pl.Int32,
}


# What a day is loaded from: one frame, or its slices one after another.
Rows = pl.DataFrame | Iterable[pl.DataFrame]


def frames(rows: Rows) -> Iterator[pl.DataFrame]:
    if isinstance(rows, pl.DataFrame):
        yield rows
    else:
        yield from rows


class Warehouse(Protocol):
    url: str

    def ensure_schema(self) -> None: ...

    def replace_day(self, table: str, day: date, rows: Rows) -> int:
        """Atomically replace ``table``'s rows for ``day`` with ``rows`` (a frame, or frames loaded
        one after another in the same transaction); return the rows stored."""

    def read_day(self, table: str, day: date) -> pl.DataFrame:
        """``table``'s rows for ``day``, typed as the frames that were loaded."""

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Ad-hoc reads (tests, tools), with ``?`` placeholders on every backend."""

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """Hold ``name`` for the block against every other process of the deployment: work that
        must not interleave across runs (one day's incidents rewriting the next day's)."""

    def session(self) -> AbstractContextManager[None]:
        """Share what can be shared between the block's statements (a DuckDB file's connection)."""


# One connection made at a time in this process: threads that open the same file at once
# otherwise race the instance's set-up (seen as "Table Function with name python_arrow_scan does
# not exist" under load). A connection takes ~13 ms to make; they are few.
_CONNECTING = threading.Lock()


class DuckDBWarehouse:
    """An embedded DuckDB file. One writer at a time: every writing step shares one pool."""

    def __init__(self, path: str) -> None:
        self.path = str(Path(path).resolve())
        self.url = self.path
        self._schema_ready = False
        # The connection a session keeps, and the thread it is for.
        self._kept: tuple[duckdb.DuckDBPyConnection, int] | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        """One connection for every statement the block runs on this thread, instead of one each:
        opening a DuckDB file and closing it (a checkpoint) cost ~25 ms, and a step that loads a
        day writes four or five tables. A block inside a session is part of it."""
        if self._kept is not None:
            yield
            return
        with self._open() as conn:
            self._kept = (conn, threading.get_ident())
            try:
                yield
            finally:
                self._kept = None

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The session's connection (see ``session``), or a connection of its own."""
        kept = self._kept
        if kept is not None and kept[1] == threading.get_ident():
            yield kept[0]
            return
        with self._open() as conn:
            yield conn

    @contextmanager
    def _open(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the file, its schema made current first (once per object: opening a
        DuckDB file costs ~30 ms, so a step's first statement shares that connection)."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with _CONNECTING:
            conn = duckdb.connect(self.path)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            # Booleans and validity masks as roaring bitmaps without trying the other methods on
            # them first (the rest still chooses its method, so the file is the same size): of a
            # day's ~1.55 s of insert CPU, analysing bitpacking and RLE on the five one-byte
            # columns took ~0.15 s. A setting of the database, for every connection to it.
            conn.execute("SET force_compression = 'roaring'")
            if not self._schema_ready:
                _ensure_schema(conn)
                self._schema_ready = True
            yield conn
        finally:
            conn.close()

    def ensure_schema(self) -> None:
        """Create or upgrade the tables and views now (any first connection does it too)."""
        self._schema_ready = False
        with self.connect():
            pass

    def replace_day(self, table: str, day: date, rows: Rows) -> int:
        columns = [name for name, _, _ in TABLES[table]]
        stored = 0
        with self.connect() as conn:
            conn.execute("BEGIN")
            try:
                conn.execute(f"DELETE FROM {table} WHERE reading_date = ?", [day])
                for part in frames(rows):
                    # String views as polars holds them: DuckDB reads them without a copy.
                    arrow = part.select(columns).to_arrow(compat_level=pl.CompatLevel.newest())
                    conn.register("incoming_rows", arrow)
                    conn.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM incoming_rows")
                    conn.unregister("incoming_rows")
                    stored += part.height
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return stored

    def read_day(self, table: str, day: date) -> pl.DataFrame:
        columns = [name for name, _, _ in TABLES[table]]
        frame = self.query(f"SELECT {', '.join(columns)} FROM {table} WHERE reading_date = ?", [day])
        return frame.cast({name: DUCK_TO_POLARS[kind.split()[0]] for name, kind, _ in TABLES[table]})

    def query(self, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
        with self.connect() as conn:
            return conn.sql(sql, params=params or []).pl()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Nothing to hold: a DuckDB file has one writing step at a time already (every step that
        writes it is in the pool greenstream_warehouse, limited to 1; README, "Concurrency")."""
        yield


def _ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Bring a DuckDB file's tables, comments and views to ``SCHEMA_VERSION``. The DDL commits
    with its version row, so a file at the current version has all of it: a connection to one
    skips ~100 statements."""
    if _schema_version(conn) >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
    )
    for table, columns in TABLES.items():
        ddl = ", ".join(f"{name} {kind}" for name, kind, _ in columns)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({ddl})")
        for name, _, comment in columns:
            conn.execute(f"COMMENT ON COLUMN {table}.{name} IS '{_sql_text(comment)}'")
    for index in DROPPED_INDEXES:
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    for view, body in VIEWS.items():
        conn.execute(f"CREATE OR REPLACE VIEW {view} AS {body}")
    current = conn.sql("SELECT max(version) FROM schema_version").fetchall()[0][0]
    if current is None or current < SCHEMA_VERSION:
        conn.execute("INSERT INTO schema_version VALUES (?, now())", [SCHEMA_VERSION])
    conn.execute("COMMIT")


def _schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The version a DuckDB file's schema is at (0 when it has none yet)."""
    found = conn.sql(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' "
        "AND schema_name = current_schema()"
    ).fetchall()[0][0]
    if not found:
        return 0
    return conn.sql("SELECT coalesce(max(version), 0) FROM schema_version").fetchall()[0][0]


def _sql_text(text: str) -> str:
    # Comments are constants of this module; DuckDB's COMMENT ON does not take parameters.
    return text.replace("'", "''")


def open_warehouse(url: str, password: str | None = None, schema: str = "greenstream") -> Warehouse:
    """PostgreSQL for a ``postgresql://user@host:port/db?sslmode=...`` URL (libpq options in the URL,
    the password given apart), else a DuckDB file path."""
    if url.startswith(("postgresql://", "postgres://")):
        from greenstream_assets.storage.postgres import PostgresWarehouse

        return PostgresWarehouse(url, password=password, schema=schema)
    return DuckDBWarehouse(url.removeprefix("duckdb://"))
