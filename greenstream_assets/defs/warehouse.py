"""Warehouse: the day's readings as the relational table analysts query, and the Parquet archive."""

from collections.abc import Iterator
from datetime import date

import dagster as dg
import polars as pl

from greenstream_assets.defs.checks import ARCHIVE_MATCHES_TABLE, TABLE_SCHEMA, SchemaCheck, daily_check
from greenstream_assets.defs.common import WAREHOUSE_POOL, Preview, daily_asset, partition_day
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.schemas import MeterReadingsTable
from greenstream_assets.storage import lake
from greenstream_assets.storage.warehouse import TABLES

TABLE_COLUMNS = [name for name, _, _ in TABLES["meter_readings"]]


def table_rows(flagged: pl.DataFrame, day: date) -> pl.DataFrame:
    """The flagged readings in the table's column order; the same rows go to table and archive."""
    return flagged.with_columns(reading_date=pl.lit(day)).select(TABLE_COLUMNS)


@daily_asset(
    group_name="warehouse",
    deps=["flagged_anomalies"],
    kinds={"duckdb", "table"},
    pool=WAREHOUSE_POOL,
    check_specs=[daily_check(TABLE_SCHEMA, "meter_readings", description=MeterReadingsTable.__doc__)],
)
def meter_readings(context: dg.AssetExecutionContext, storage: StorageResource):
    """The relational table analysts query: every kept reading of the day with its UTC timestamp,
    kW value and flags (is_missing, is_anomaly, is_faulty, is_peak_period) and the file it came from.
    Re-materializing a day replaces that day in one transaction, never duplicates it."""
    day = partition_day(context)
    check = SchemaCheck(MeterReadingsTable)
    totals = {"missing": 0, "anomalies": 0, "meters": 0}
    head = Preview()

    def rows(slices: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        # A slice of meters at a time, loaded in one transaction and validated as it goes.
        for flagged in slices:
            part = table_rows(flagged, day)
            check.add(part)
            totals["missing"] += int(part.get_column("is_missing").sum())
            totals["anomalies"] += int(part.get_column("is_anomaly").sum())
            totals["meters"] += part.get_column("meter_id").n_unique()
            head.add(part)
            yield part

    warehouse = storage.open_warehouse()
    with lake.read_slices(storage.lake_store(), lake.layer_key("flagged_anomalies", day)) as slices:
        stored = warehouse.replace_day("meter_readings", day, rows(slices))
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(stored),
            "missing": dg.MetadataValue.int(totals["missing"]),
            "anomalies": dg.MetadataValue.int(totals["anomalies"]),
            # Slices hold disjoint meters.
            "meters": dg.MetadataValue.int(totals["meters"]),
            "preview": head.value(),
        }
    )
    # The rows loaded are validated as they go; the table must then hold exactly that many for the
    # day (reading 4.8M rows back to validate them again would double the step's cost).
    in_table = warehouse.query(
        "SELECT count(*) AS n FROM meter_readings WHERE reading_date = ?", [day]
    ).item()
    result = check.result(TABLE_SCHEMA, context.asset_key)
    yield dg.AssetCheckResult(
        check_name=TABLE_SCHEMA,
        asset_key=context.asset_key,
        passed=result.passed and in_table == stored,
        metadata={**result.metadata, "rows_in_table": dg.MetadataValue.int(in_table)},
        description=result.description,
    )


@daily_asset(
    group_name="warehouse",
    deps=["flagged_anomalies"],
    kinds={"parquet"},
    check_specs=[
        daily_check(
            ARCHIVE_MATCHES_TABLE,
            "meter_readings_archive",
            description="The archived file reads back with the same rows and keys as the day's table rows.",
        )
    ],
)
def meter_readings_archive(context: dg.AssetExecutionContext, storage: StorageResource):
    """The day's meter_readings rows as Parquet under archive/meter_readings/date=YYYY-MM-DD/
    (hive layout: DuckDB, polars and Athena read the folder as one table). Published atomically:
    readers see the previous day file or the new one, never a part."""
    day = partition_day(context)
    store = storage.lake_store()
    key = lake.archive_key(day)
    with (
        lake.read_slices(store, lake.layer_key("flagged_anomalies", day)) as slices,
        lake.SliceWriter(store, key, compression="zstd", statistics=True, meter_slices=True) as out,
    ):
        for flagged in slices:
            # The partition column lives in the path (hive layout), not in the file.
            out.write(table_rows(flagged, day).drop("reading_date"))
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(out.rows),
            "location": dg.MetadataValue.path(key),
        }
    )
    # What a reader gets: the published object's footer, as every engine reads it first.
    archived = lake.parquet_rows(store, key)
    yield dg.AssetCheckResult(
        check_name=ARCHIVE_MATCHES_TABLE,
        asset_key=context.asset_key,
        passed=archived == out.rows,
        metadata={"rows_archived": archived, "rows_expected": out.rows},
    )
