"""The PostgreSQL (RDS) warehouse: the same tables as DuckDB, loaded by COPY, a day swapped in whole.

``meter_readings`` is range-partitioned by day on ``reading_ts`` (UTC). A day is loaded beside the
old one into a fresh table (COPY, then its indexes and a CHECK matching the day's bounds), and swapped
in by one short transaction (detach and drop the old partition, attach the new one): readers see the
old day or the new day, never a mix, and a load that dies leaves the old day in place. The small
report tables are replaced by DELETE + COPY in one transaction.

Identifiers are constants of this module or built from a validated date; every value is a bound
parameter or goes through COPY. The password never appears in the URL we print.
"""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import polars as pl
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from greenstream_assets.storage.lake import prefetched
from greenstream_assets.storage.warehouse import TABLES, VIEWS, Rows, frames

PG_TYPES = {
    "VARCHAR": "TEXT",
    "TIMESTAMPTZ": "TIMESTAMPTZ",
    "DATE": "DATE",
    "TINYINT": "SMALLINT",
    "DOUBLE": "DOUBLE PRECISION",
    "BOOLEAN": "BOOLEAN",
    "BIGINT": "BIGINT",
    "INTEGER": "INTEGER",
}
POLARS_TYPES = {
    "TEXT": pl.String,
    "TIMESTAMPTZ": pl.Datetime("us", "UTC"),
    "DATE": pl.Date,
    "SMALLINT": pl.Int8,
    "DOUBLE PRECISION": pl.Float64,
    "BOOLEAN": pl.Boolean,
    "BIGINT": pl.Int64,
    "INTEGER": pl.Int32,
}
COPY_CHUNK_ROWS = 500_000
# Ours unless the URL sets them: psycopg lets keyword arguments win over the URL's own options.
CONNECT_DEFAULTS: dict[str, str | int] = {"application_name": "greenstream", "connect_timeout": 10}


def mask_url(url: str) -> str:
    """The URL with any password (``user:password@`` or ``?password=``) replaced, safe to log."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _pg_type(duck_type: str) -> tuple[str, bool]:
    base, _, rest = duck_type.partition(" ")
    return PG_TYPES[base], "NOT NULL" in rest


# Versioned, idempotent DDL: each entry runs once, in order, recorded in schema_version.
def _migrations() -> list[list[sql.Composable]]:
    def columns(table: str) -> sql.Composable:
        return sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(name),
                sql.SQL(_pg_type(kind)[0]),
                sql.SQL(" NOT NULL" if _pg_type(kind)[1] else ""),
            )
            for name, kind, _ in TABLES[table]
        )

    v1: list[sql.Composable] = [
        sql.SQL(
            "CREATE TABLE meter_readings ({}, PRIMARY KEY (meter_id, reading_ts)) PARTITION BY RANGE (reading_ts)"
        ).format(columns("meter_readings")),
        # System peak: sum by instant over the day's eligible readings.
        sql.SQL(
            "CREATE INDEX meter_readings_peak_idx ON meter_readings (reading_ts) INCLUDE (energy_kw) "
            "WHERE NOT is_missing AND NOT is_anomaly"
        ),
        # Faulty-meter look-ups: a meter's flagged readings in time order.
        sql.SQL(
            "CREATE INDEX meter_readings_faulty_idx ON meter_readings (meter_id, reading_ts) WHERE is_faulty"
        ),
        sql.SQL("CREATE TABLE faulty_meters ({}, PRIMARY KEY (reading_date, meter_id, start_ts))").format(
            columns("faulty_meters")
        ),
        sql.SQL("CREATE TABLE daily_peaks ({}, PRIMARY KEY (reading_date))").format(columns("daily_peaks")),
    ]

    def comments(tables: tuple[str, ...]) -> list[sql.Composable]:
        return [
            sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                sql.Identifier(table), sql.Identifier(name), sql.Literal(comment)
            )
            for table in tables
            for name, _, comment in TABLES[table]
        ]

    v1 += comments(("meter_readings", "faulty_meters", "daily_peaks"))
    # v2: the per-meter report, the faulty-meter registry, completeness and data-quality history.
    v2_keys = {
        "meter_daily_peaks": "reading_date, meter_id",
        "faulty_incident_days": "reading_date, meter_id, start_ts",
        "meter_completeness": "reading_date, meter_id",
        "daily_quality": "reading_date",
    }
    v2: list[sql.Composable] = [
        sql.SQL("CREATE TABLE {} ({}, PRIMARY KEY ({}))").format(
            sql.Identifier(table), columns(table), sql.SQL(key)
        )
        for table, key in v2_keys.items()
    ]
    v2 += [
        sql.SQL("CREATE VIEW {} AS {}").format(sql.Identifier(v), sql.SQL(body)) for v, body in VIEWS.items()
    ]
    v2 += comments(tuple(v2_keys))
    return [v1, v2]


class PostgresWarehouse:
    def __init__(self, url: str, password: str | None = None, schema: str = "greenstream") -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ValueError(f"invalid warehouse schema name {schema!r}")
        self.dsn = url
        self.url = mask_url(url)
        self.password = password or None
        self.schema = schema

    @contextmanager
    def connect(self, autocommit: bool = False) -> Iterator[psycopg.Connection]:
        in_url = conninfo_to_dict(self.dsn)
        defaults = {name: value for name, value in CONNECT_DEFAULTS.items() if name not in in_url}
        conn = psycopg.connect(self.dsn, password=self.password, autocommit=autocommit, **defaults)
        try:
            conn.execute("SET TimeZone = 'UTC'")
            conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(self.schema)))
            if not autocommit:
                conn.commit()
            yield conn
        finally:
            conn.close()

    def _lock_key(self, *parts: object) -> int:
        digest = hashlib.sha256("|".join(map(str, (self.schema, *parts))).encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Nothing kept: each statement opens a connection of its own, cheap next to its work there."""
        yield

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A session advisory lock on ``name`` (in this schema) for the block: released at the end,
        or by PostgreSQL when the process dies."""
        key = self._lock_key("exclusive", name)
        with self.connect(autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", [key])
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])

    def ensure_schema(self) -> None:
        with self.connect() as conn, conn.transaction():
            # Concurrent runs may all start by migrating: one at a time.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [self._lock_key("ddl")])
            # A least-privilege role owns its schema but may not create schemas: only create when missing.
            if not conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema]).fetchone():
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
            )
            current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
            for version, statements in enumerate(_migrations(), start=1):
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version VALUES (%s, now())", [version])

    def replace_day(self, table: str, day: date, rows: Rows) -> int:
        columns = [name for name, _, _ in TABLES[table]]
        if table == "meter_readings":
            return self._swap_partition(day, columns, rows)
        with self.connect() as conn, conn.transaction():
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE reading_date = %s").format(sql.Identifier(table)), [day]
            )
            return self._copy(conn, table, columns, rows)

    def _copy(self, conn: psycopg.Connection, table: str, columns: list[str], rows: Rows) -> int:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        copied = 0
        with conn.cursor() as cur, cur.copy(statement) as copy:
            # The next chunk is written as CSV on a thread while this one goes to the server.
            for data, n in prefetched(_csv_chunks(rows, columns)):
                copy.write(data)
                copied += n
        return copied

    def _swap_partition(self, day: date, columns: list[str], rows: Rows) -> int:
        lo = datetime.combine(day, time(), UTC)
        hi = lo + timedelta(days=1)
        partition = f"meter_readings_{day:%Y%m%d}"
        stage = f"{partition}_load_{uuid.uuid4().hex[:8]}"
        with self.connect(autocommit=True) as conn:
            # One load of a given day at a time; loads of different days run side by side.
            conn.execute("SELECT pg_advisory_lock(%s)", [self._lock_key("meter_readings", day)])
            try:
                for (leftover,) in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename LIKE %s",
                    [self.schema, f"{partition}\\_load\\_%"],
                ).fetchall():
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(leftover)))
                conn.execute(
                    sql.SQL("CREATE TABLE {} (LIKE meter_readings INCLUDING DEFAULTS)").format(
                        sql.Identifier(stage)
                    )
                )
                with conn.transaction():
                    copied = self._copy(conn, stage, columns, rows)
                ident = sql.Identifier(stage)
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} ADD CONSTRAINT {} CHECK (reading_ts >= {} AND reading_ts < {})"
                    ).format(ident, sql.Identifier(f"{stage}_bounds"), sql.Literal(lo), sql.Literal(hi))
                )
                # The parent's indexes, built on the new table before it is attached (ATTACH then
                # adopts them instead of building under lock).
                conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (meter_id, reading_ts)").format(ident))
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX ON {} (reading_ts) INCLUDE (energy_kw) WHERE NOT is_missing AND NOT is_anomaly"
                    ).format(ident)
                )
                conn.execute(
                    sql.SQL("CREATE INDEX ON {} (meter_id, reading_ts) WHERE is_faulty").format(ident)
                )
                conn.execute(sql.SQL("ANALYZE {}").format(ident))
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '60s'")
                    conn.execute("LOCK TABLE meter_readings IN ACCESS EXCLUSIVE MODE")
                    exists = conn.execute(
                        "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                        [self.schema, partition],
                    ).fetchone()
                    if exists:
                        conn.execute(
                            sql.SQL("ALTER TABLE meter_readings DETACH PARTITION {}").format(
                                sql.Identifier(partition)
                            )
                        )
                        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition)))
                    conn.execute(
                        sql.SQL("ALTER TABLE {} RENAME TO {}").format(ident, sql.Identifier(partition))
                    )
                    conn.execute(
                        sql.SQL(
                            "ALTER TABLE meter_readings ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
                        ).format(sql.Identifier(partition), sql.Literal(lo), sql.Literal(hi))
                    )
            finally:
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(stage)))
                conn.execute("SELECT pg_advisory_unlock(%s)", [self._lock_key("meter_readings", day)])
        return copied

    def read_day(self, table: str, day: date) -> pl.DataFrame:
        schema = {name: POLARS_TYPES[_pg_type(kind)[0]] for name, kind, _ in TABLES[table]}
        selected = sql.SQL(", ").join(
            sql.SQL("(extract(epoch FROM {0}) * 1000000)::bigint AS {0}").format(sql.Identifier(name))
            if dtype == pl.Datetime("us", "UTC")
            # Booleans as true/false (COPY's own t/f is not what CSV readers take).
            else sql.SQL("{0}::text AS {0}").format(sql.Identifier(name))
            if dtype == pl.Boolean
            else sql.Identifier(name)
            for name, dtype in schema.items()
        )
        statement = sql.SQL(
            "COPY (SELECT {} FROM {} WHERE reading_date = {}) TO STDOUT (FORMAT csv, HEADER)"
        ).format(selected, sql.Identifier(table), sql.Literal(day))
        buffer = io.BytesIO()
        with self.connect() as conn, conn.cursor() as cur, cur.copy(statement) as copy:
            for block in copy:
                buffer.write(block)
        read_as = {n: (pl.Int64 if t == pl.Datetime("us", "UTC") else t) for n, t in schema.items()}
        frame = pl.read_csv(buffer.getvalue(), schema=read_as)
        return frame.with_columns(
            pl.col(n).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            for n, t in schema.items()
            if t == pl.Datetime("us", "UTC")
        )

    def query(self, statement: str, params: list[Any] | None = None) -> pl.DataFrame:
        """Ad-hoc read for tests and tools: ``?`` placeholders, as on DuckDB."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(statement.replace("%", "%%").replace("?", "%s"), params or [])
            names = [d.name for d in cur.description]
            return pl.DataFrame(cur.fetchall(), schema=names, orient="row", infer_schema_length=None)


def _csv_chunks(rows: Rows, columns: list[str]) -> Iterator[tuple[bytes, int]]:
    """``rows`` as CSV for COPY, ``COPY_CHUNK_ROWS`` rows at a time, with the rows in each."""
    for part in frames(rows):
        part = part.select(columns)
        for offset in range(0, part.height, COPY_CHUNK_ROWS):
            chunk = part.slice(offset, COPY_CHUNK_ROWS)
            buffer = io.BytesIO()
            chunk.write_csv(buffer, include_header=False)
            yield buffer.getvalue(), chunk.height
