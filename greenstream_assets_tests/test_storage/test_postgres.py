"""The PostgreSQL warehouse against the real server: swaps, concurrency, a killed load, roles."""

import re
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
import pytest

from greenstream_assets.defs.warehouse import rows_of_day
from greenstream_assets.storage.postgres import PostgresWarehouse, mask_url
from greenstream_assets.storage.warehouse import TABLES, DuckDBWarehouse

DAY = date(2024, 3, 4)
COLUMNS = [name for name, _, _ in TABLES["meter_readings"]]


def readings(day: date, meters: int, per_meter: int = 96, kw: float = 1.0) -> pl.DataFrame:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    n = meters * per_meter
    return pl.DataFrame(
        {
            "meter_id": [f"M{i // per_meter:06d}" for i in range(n)],
            "reading_ts": [start + timedelta(minutes=15 * (i % per_meter)) for i in range(n)],
            "reading_date": [day] * n,
            "local_date": [day] * n,
            "local_hour": pl.Series([(15 * (i % per_meter)) // 60 for i in range(n)], dtype=pl.Int8),
            "energy_kw": [kw] * n,
            "is_missing": [False] * n,
            "is_anomaly": [False] * n,
            "is_faulty": [False] * n,
            "is_peak_period": [False] * n,
            "source_file": ["f.csv"] * n,
            "line_number": pl.Series(range(2, n + 2), dtype=pl.Int64),
        }
    ).select(COLUMNS)


@pytest.fixture
def warehouse(pg_url, pg_schema):
    w = PostgresWarehouse(pg_url, schema=pg_schema)
    w.ensure_schema()
    return w


def test_schema_is_versioned_idempotent_and_commented(warehouse):
    warehouse.ensure_schema()
    assert warehouse.query("SELECT version FROM schema_version ORDER BY 1").rows() == [(1,), (2,)]
    comment = warehouse.query(
        "SELECT col_description('meter_readings'::regclass, attnum) FROM pg_attribute "
        "WHERE attrelid = 'meter_readings'::regclass AND attname = 'energy_kw'"
    ).item()
    assert comment == "Reading in kW (W divided by 1000); NULL when missing"
    indexes = set(
        warehouse.query("SELECT indexname FROM pg_indexes WHERE tablename = 'meter_readings'").to_series()
    )
    assert indexes == {"meter_readings_pkey", "meter_readings_peak_idx", "meter_readings_faulty_idx"}


def test_a_day_is_swapped_in_whole_and_reloading_never_duplicates(warehouse):
    warehouse.replace_day("meter_readings", DAY, readings(DAY, 10, kw=1.0))
    warehouse.replace_day("meter_readings", DAY + timedelta(days=1), readings(DAY + timedelta(days=1), 3))
    warehouse.replace_day("meter_readings", DAY, readings(DAY, 12, kw=2.0))
    counts = warehouse.query(
        "SELECT reading_date, count(*), sum(energy_kw) FROM meter_readings GROUP BY 1 ORDER BY 1"
    )
    assert counts.rows() == [(DAY, 12 * 96, 12 * 96 * 2.0), (DAY + timedelta(days=1), 3 * 96, 3 * 96 * 1.0)]
    partitions = (
        warehouse.query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'meter_readings'::regclass ORDER BY 1"
        )
        .to_series()
        .to_list()
    )
    assert partitions == ["meter_readings_20240304", "meter_readings_20240305"]
    back = warehouse.read_day("meter_readings", DAY).sort("meter_id", "reading_ts")
    assert back.equals(readings(DAY, 12, kw=2.0))


def test_rows_outside_the_day_are_refused_whole(warehouse):
    warehouse.replace_day("meter_readings", DAY, readings(DAY, 2))
    stray = readings(DAY + timedelta(days=1), 1)
    with pytest.raises(psycopg.errors.CheckViolation):
        warehouse.replace_day("meter_readings", DAY, pl.concat([readings(DAY, 5), stray]))
    assert warehouse.query("SELECT count(*) FROM meter_readings").item() == 2 * 96


def test_hostile_text_is_stored_verbatim(warehouse):
    rows = readings(DAY, 3).with_columns(
        meter_id=pl.Series(["x'); DROP TABLE meter_readings;--", 'quote "and" comma, ünïcode', "tab\there"])
        .repeat_by(96)
        .explode()
    )
    warehouse.replace_day("meter_readings", DAY, rows)
    stored = set(warehouse.query("SELECT DISTINCT meter_id FROM meter_readings").to_series())
    assert stored == {"x'); DROP TABLE meter_readings;--", 'quote "and" comma, ünïcode', "tab\there"}


def test_loads_of_different_days_run_concurrently(warehouse):
    days = [DAY + timedelta(days=i) for i in range(4)]
    errors = []

    def load(day):
        try:
            warehouse.replace_day("meter_readings", day, readings(day, 200, kw=float(day.day)))
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=load, args=(d,)) for d in days]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    counts = warehouse.query("SELECT reading_date, count(*) FROM meter_readings GROUP BY 1 ORDER BY 1").rows()
    assert counts == [(d, 200 * 96) for d in days]


def test_a_load_killed_mid_copy_leaves_the_previous_day(warehouse, pg_url):
    warehouse.replace_day("meter_readings", DAY, readings(DAY, 5, kw=1.0))
    big = readings(DAY, 4_000, kw=3.0)
    killer_done = threading.Event()

    def killer():
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for _ in range(400):
                pids = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'greenstream' "
                    "AND query ILIKE 'COPY %%load%%' AND state = 'active'"
                ).fetchall()
                if pids:
                    admin.execute("SELECT pg_terminate_backend(%s)", [pids[0][0]])
                    killer_done.set()
                    return
                threading.Event().wait(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    with pytest.raises(psycopg.OperationalError):
        warehouse.replace_day("meter_readings", DAY, big)
    thread.join()
    assert killer_done.is_set()
    assert warehouse.query("SELECT count(*), sum(energy_kw) FROM meter_readings").row(0) == (
        5 * 96,
        5 * 96 * 1.0,
    )
    # The retry (what the step's RetryPolicy does) loads the day whole and cleans up after the dead one.
    warehouse.replace_day("meter_readings", DAY, big)
    assert warehouse.query("SELECT count(*), sum(energy_kw) FROM meter_readings").row(0) == (
        4_000 * 96,
        4_000 * 96 * 3.0,
    )
    leftovers = warehouse.query("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_load\\_%'").item()
    assert leftovers == 0


def test_the_password_never_shows_in_the_url():
    assert (
        mask_url("postgresql://gs:s3cret@db:5432/x?sslmode=require")
        == "postgresql://gs:***@db:5432/x?sslmode=require"
    )
    assert PostgresWarehouse("postgresql://gs:s3cret@db/x").url == "postgresql://gs:***@db/x"
    assert (
        mask_url("postgresql://gs@db/x?sslmode=require&password=s3cret&application_name=a")
        == "postgresql://gs@db/x?sslmode=require&password=***&application_name=a"
    )
    assert "s3cret" not in PostgresWarehouse("postgresql://gs@db/x?password=s3cret").url
    with pytest.raises(ValueError):
        PostgresWarehouse("postgresql://db/x", schema='x"; DROP SCHEMA public; --')


def test_libpq_options_in_the_url_win_over_our_defaults(pg_url, pg_schema):
    options = "connect_timeout=45&application_name=analyst_tool"
    tuned = PostgresWarehouse(f"{pg_url}{'&' if '?' in pg_url else '?'}{options}", schema=pg_schema)
    with tuned.connect() as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("analyst_tool",)
        assert conn.info.get_parameters()["connect_timeout"] == "45"
    with PostgresWarehouse(pg_url, schema=pg_schema).connect() as conn:
        assert conn.execute("SHOW application_name").fetchone() == ("greenstream",)
        assert conn.info.get_parameters()["connect_timeout"] == "10"


class ExplainedWarehouse:
    """A warehouse that also keeps the plan of every query it runs."""

    def __init__(self, warehouse: PostgresWarehouse) -> None:
        self.warehouse = warehouse
        self.plans: list[str] = []

    def query(self, statement, params=None):
        plan = self.warehouse.query(f"EXPLAIN {statement}", params).to_series().to_list()
        self.plans.append("\n".join(plan))
        return self.warehouse.query(statement, params)


def test_the_step_counts_a_day_in_its_partition_alone(warehouse):
    for day, meters in ((DAY, 3), (DAY + timedelta(days=1), 5)):
        warehouse.replace_day("meter_readings", day, readings(day, meters))
    explained = ExplainedWarehouse(warehouse)
    assert rows_of_day(explained, DAY) == 3 * 96
    # Pruned to the day's partition: the other day's is neither scanned nor locked.
    assert [set(re.findall(r"meter_readings_\d{8}", plan)) for plan in explained.plans] == [
        {"meter_readings_20240304"}
    ]


def test_rows_of_day_on_duckdb(tmp_path):
    warehouse = DuckDBWarehouse(str(tmp_path / "warehouse.duckdb"))
    for day, meters in ((DAY, 3), (DAY + timedelta(days=1), 5)):
        warehouse.replace_day("meter_readings", day, readings(day, meters))
    assert [rows_of_day(warehouse, d) for d in (DAY, DAY + timedelta(days=1), DAY + timedelta(days=2))] == [
        3 * 96,
        5 * 96,
        0,
    ]


def test_least_privilege_roles(pg_url, pg_schema):
    suffix = uuid.uuid4().hex[:8]
    pipeline, analyst, reader = f"gs_pipeline_{suffix}", f"gs_analysts_{suffix}", f"gs_reader_{suffix}"
    script = (Path(__file__).parents[2] / "deploy/postgres/roles.sql").read_text()
    for name, value in {"schema": pg_schema, "pipeline": pipeline, "analysts": analyst}.items():
        script = script.replace(f':"{name}"', f'"{value}"')
    script = script.replace(":'password'", "'pipeline-pw'")
    statements = [
        s
        for s in "\n".join(line for line in script.splitlines() if not line.startswith("--")).split(";")
        if s.strip()
    ]
    base = pg_url.rsplit("@", 1)[1]
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement)
            admin.execute(f'CREATE ROLE "{reader}" LOGIN PASSWORD \'reader-pw\' IN ROLE "{analyst}"')
        as_pipeline = PostgresWarehouse(
            f"postgresql://{pipeline}@{base}", password="pipeline-pw", schema=pg_schema
        )
        as_pipeline.ensure_schema()
        as_pipeline.replace_day("meter_readings", DAY, readings(DAY, 2))
        with (
            psycopg.connect(f"postgresql://{pipeline}@{base}", password="pipeline-pw") as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("CREATE TABLE public.sneaky (x int)")
        as_reader = PostgresWarehouse(f"postgresql://{reader}@{base}", password="reader-pw", schema=pg_schema)
        assert as_reader.query("SELECT count(*) FROM meter_readings").item() == 2 * 96
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_reader.query("DELETE FROM meter_readings")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_reader.replace_day(
                "daily_peaks",
                DAY,
                pl.DataFrame(
                    {"reading_date": [DAY], "peak_ts": [None], "peak_kw": [None], "meters_reporting": [0]}
                ),
            )
    finally:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{pg_schema}" CASCADE')
            for role in (reader, analyst, pipeline):
                admin.execute(f'DROP OWNED BY "{role}"') if admin.execute(
                    "SELECT 1 FROM pg_roles WHERE rolname = %s", [role]
                ).fetchone() else None
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_exclusive_holds_a_name_against_other_connections_until_the_block_ends(warehouse):
    import time

    entered, order = threading.Event(), []

    def first():
        with warehouse.exclusive("faulty_meter_incidents"):
            entered.set()
            time.sleep(0.5)
            order.append("first leaves")

    holder = threading.Thread(target=first)
    holder.start()
    entered.wait(10)
    with warehouse.exclusive("faulty_meter_incidents"):
        order.append("second enters")
    with warehouse.exclusive("another name"):
        order.append("another name")
    holder.join()
    assert order == ["first leaves", "second enters", "another name"]
