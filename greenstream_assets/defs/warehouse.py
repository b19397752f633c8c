"""Warehouse: the day's readings as the relational table analysts query, and the Parquet archive."""

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime, time, timedelta

import dagster as dg
import polars as pl

from greenstream_assets.defs import analytics, reports
from greenstream_assets.defs.checks import ARCHIVE_MATCHES_TABLE, TABLE_SCHEMA, SchemaCheck, daily_check
from greenstream_assets.defs.common import IO_RETRY, WAREHOUSE_POOL, Preview, partition_day
from greenstream_assets.defs.partitions import daily_partitions
from greenstream_assets.defs.resources import RulesResource, StorageResource
from greenstream_assets.rules import reports as report_rules
from greenstream_assets.schemas import MeterReadingsTable
from greenstream_assets.storage import lake
from greenstream_assets.storage.warehouse import TABLES, Warehouse

TABLE_COLUMNS = [name for name, _, _ in TABLES["meter_readings"]]


def table_rows(flagged: pl.DataFrame, day: date) -> pl.DataFrame:
    """The flagged readings in the table's column order; the same rows go to table and archive."""
    return flagged.with_columns(reading_date=pl.lit(day)).select(TABLE_COLUMNS)


def rows_of_day(warehouse: Warehouse, day: date) -> int:
    """The table's row count for ``day``. Bounding reading_ts by the day's UTC hours changes no count
    (a day's readings lie inside it: the table schema check asserts so) but lets PostgreSQL count in
    the day's partition alone, instead of scanning and locking every day's (reading_date has no
    index there)."""
    start = datetime.combine(day, time(), UTC)
    return warehouse.query(
        "SELECT count(*) AS n FROM meter_readings "
        "WHERE reading_date = ? AND reading_ts >= ? AND reading_ts < ?",
        [day, start, start + timedelta(days=1)],
    ).item()


TABLE = dg.AssetKey("meter_readings")
ARCHIVE = dg.AssetKey("meter_readings_archive")


@dg.multi_asset(
    name="load_meter_readings",
    specs=[
        dg.AssetSpec(
            TABLE,
            deps=["flagged_anomalies"],
            group_name="warehouse",
            kinds={"duckdb", "table"},
            description=(
                "The relational table analysts query: every kept reading of the day with its UTC "
                "timestamp, kW value and flags (is_missing, is_anomaly, is_faulty, is_peak_period) and "
                "the file it came from. Re-materializing a day replaces that day in one transaction, "
                "never duplicates it."
            ),
        ),
        dg.AssetSpec(
            ARCHIVE,
            deps=["flagged_anomalies"],
            group_name="warehouse",
            kinds={"parquet"},
            description=(
                "The day's meter_readings rows as Parquet under archive/meter_readings/date=YYYY-MM-DD/ "
                "(hive layout: DuckDB, polars and Athena read the folder as one table). Published "
                "atomically: readers see the previous day file or the new one, never a part."
            ),
        ),
        reports.DAILY_PEAKS_SPEC,
        reports.FAULTY_METERS_SPEC,
        analytics.INCIDENTS_SPEC,
    ],
    partitions_def=daily_partitions,
    retry_policy=IO_RETRY,
    pool=WAREHOUSE_POOL,
    can_subset=True,
    check_specs=[
        daily_check(TABLE_SCHEMA, TABLE, description=MeterReadingsTable.__doc__),
        daily_check(
            ARCHIVE_MATCHES_TABLE,
            ARCHIVE,
            description="The archived file reads back with the same rows and keys as the day's table rows.",
        ),
        analytics.INCIDENTS_CHECK,
    ],
)
def load_meter_readings(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """The day's table rows and their archive from one read of the flagged readings: each slice is
    loaded into the warehouse while the archive encodes the slice before it on its own thread. The
    archive is published after the table's transaction commits; a failure of either leaves the
    previous archive in place, and a rerun replaces both.

    The reports made from them follow in the same step, from the same read: the system peak
    (daily_peaks) from each slice's per-instant totals, the faulty-meter incidents from each slice
    of meters on a thread of their own, and faulty_meters from validate_day's periods. As steps of
    their own, each read the day back (~0.45 s a day). Any subset can be materialized: a report
    without the table and the archive reads what it is made from, as last published."""
    warehouse = storage.open_warehouse()
    # One warehouse connection for the step's tables (see Warehouse.session).
    with warehouse.session():
        yield from _load_meter_readings(context, storage, rules, warehouse)


def _load_meter_readings(
    context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource, warehouse: Warehouse
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    day = partition_day(context)
    store = storage.lake_store()
    key = lake.archive_key(day)
    selected = context.selected_asset_keys
    load, keep = TABLE in selected, ARCHIVE in selected
    peaks, faulty, registry = (
        k in selected for k in (reports.DAILY_PEAKS, reports.FAULTY_METERS, analytics.INCIDENTS)
    )
    config = rules.config()
    check = SchemaCheck(MeterReadingsTable)
    totals = {"missing": 0, "anomalies": 0, "meters": 0}
    instant_totals: list[pl.DataFrame] = []
    head = Preview()
    stored = 0
    table_valid = False
    # The reports worked out from the slices below, when the step reads them. What goes wrong with
    # them on the way is kept, not raised: the table and the archive go on, and the report is
    # then made from what it reads, as alone, after them (where its error, if it recurs, fails
    # the step).
    made_incidents = None
    peaks_failed: list[Exception] = []
    if registry and (load or keep):
        try:
            made_incidents = analytics.DayIncidents(
                store, day, config, analytics.read_previous_open(store, day)
            )
        except Exception as err:
            context.log.warning(f"Incidents of {day} will be made after the load: {err!r}")
    with ExitStack() as stack:
        slices = (
            stack.enter_context(lake.read_slices(store, lake.layer_key("flagged_anomalies", day)))
            if load or keep
            else iter(())
        )
        archive = (
            stack.enter_context(
                lake.SliceWriter(store, key, compression="zstd", statistics=True, meter_slices=True)
            )
            if keep
            else None
        )
        # The metadata's counts are made on a thread of their own while the slice is loaded (the
        # meters' distinct count hashes every id: ~0.13 s a day this thread spent outside DuckDB).
        counting = stack.enter_context(lake.OneBehind("load-counts"))
        finding = stack.enter_context(lake.OneBehind("incidents"))

        def count(part: pl.DataFrame) -> None:
            totals["missing"] += int(part.get_column("is_missing").sum())
            totals["anomalies"] += int(part.get_column("is_anomaly").sum())
            totals["meters"] += part.get_column("meter_id").n_unique()
            head.add(part)
            if peaks and not peaks_failed:
                # Taken for the peak only when the table's schema check passes (see below).
                try:
                    instant_totals.append(report_rules.instant_totals(part))
                except Exception as err:
                    peaks_failed.append(err)

        def rows() -> Iterator[pl.DataFrame]:
            # A slice of meters at a time: archived, loaded in the one transaction and validated.
            for flagged in slices:
                part = table_rows(flagged, day)
                if archive is not None:
                    # The partition column lives in the archive's path (hive layout), not in the file.
                    archive.write(part.drop("reading_date"))
                if load:
                    check.add(part)
                if load:
                    counting.submit(count, part)
                if made_incidents is not None:
                    finding.submit(made_incidents.add, part)
                yield part
            # The last slice counted (or its error raised) inside the table's transaction.
            counting.wait()

        if load:
            stored = warehouse.replace_day("meter_readings", day, rows())
        elif keep:
            for _ in rows():
                pass
        counting.close()
        finding.close()
    if load:
        yield dg.MaterializeResult(
            asset_key=TABLE,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(stored),
                "missing": dg.MetadataValue.int(totals["missing"]),
                "anomalies": dg.MetadataValue.int(totals["anomalies"]),
                # Slices hold disjoint meters.
                "meters": dg.MetadataValue.int(totals["meters"]),
                "preview": head.value(),
            },
        )
        # The rows loaded are validated as they go; the table must then hold exactly that many for
        # the day (reading 4.8M rows back to validate them again would double the step's cost).
        in_table = rows_of_day(warehouse, day)
        result = check.result(TABLE_SCHEMA, TABLE)
        table_valid = result.passed and in_table == stored
        yield dg.AssetCheckResult(
            check_name=TABLE_SCHEMA,
            asset_key=TABLE,
            passed=table_valid,
            metadata={**result.metadata, "rows_in_table": dg.MetadataValue.int(in_table)},
            description=result.description,
        )
    if archive is not None:
        yield dg.MaterializeResult(
            asset_key=ARCHIVE,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(archive.rows),
                "location": dg.MetadataValue.path(key),
            },
        )
        # What a reader gets: the published object's footer, as every engine reads it first.
        archived = lake.parquet_rows(store, key)
        loaded = {"rows_in_table": stored} if load else {}
        yield dg.AssetCheckResult(
            check_name=ARCHIVE_MATCHES_TABLE,
            asset_key=ARCHIVE,
            passed=archived == archive.rows and (not load or archived == stored),
            metadata={"rows_archived": archived, "rows_expected": archive.rows, **loaded},
        )
    if peaks:
        # From the slices' totals when the rows loaded passed the table's schema check (a meter's
        # reading is one per instant, so the readings counted are meters), else from the archive.
        peak = (
            report_rules.peak_of_totals(instant_totals, day)
            if load and table_valid and not peaks_failed
            else reports.archived_peak(store, day)
        )
        yield reports.publish_daily_peaks(store, warehouse, day, peak)
    if faulty:
        yield reports.publish_faulty_meters(store, warehouse, day)
    if registry:
        yield from analytics.materialize_incidents(context, store, warehouse, config, day, made_incidents)
