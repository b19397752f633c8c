"""Reports people act on: the day's system peak and the meters found stuck near zero."""

import dagster as dg
import polars as pl

from greenstream_assets.defs.common import WAREHOUSE_POOL, daily_asset, partition_day, preview
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.rules.reports import system_peak
from greenstream_assets.storage import lake


@daily_asset(
    group_name="reports",
    deps=["meter_readings", "meter_readings_archive"],
    kinds={"duckdb", "table"},
    pool=WAREHOUSE_POOL,
)
def daily_peaks(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """The day's system peak: the instant with the highest total demand across all meters, its kW
    and how many meters reported in it. Missing and anomalous readings never enter a peak."""
    day = partition_day(context)
    store = storage.lake_store()
    with lake.local_copy(store, lake.archive_key(day)) as path:
        # Scanned, not read: the peak's totals need no meter id, and its meter count reads only the
        # peak instant's (a day's 4.8M ids decoded for one count cost most of the step).
        peak = system_peak(
            pl.scan_parquet(path).select("meter_id", "reading_ts", "energy_kw", "is_missing", "is_anomaly"),
            day,
        )
    storage.open_warehouse().replace_day("daily_peaks", day, peak)
    lake.mark_day_done(store, day, "daily_peaks")
    peak_kw, peak_ts = peak.item(0, "peak_kw"), peak.item(0, "peak_ts")
    # A day without a reading that can peak has no peak: no figure, not a peak of 0 kW.
    found = (
        {
            "peak_kw": dg.MetadataValue.float(float(peak_kw)),
            "peak_ts": dg.MetadataValue.text(peak_ts.isoformat()),
        }
        if peak_kw is not None and peak_ts is not None
        else {}
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(peak.height),
            **found,
            "meters_reporting": dg.MetadataValue.int(int(peak.item(0, "meters_reporting"))),
            "preview": preview(peak),
        }
    )


@daily_asset(
    group_name="reports",
    deps=["flagged_anomalies", "meter_readings"],
    kinds={"duckdb", "table"},
    pool=WAREHOUSE_POOL,
)
def faulty_meters(context: dg.AssetExecutionContext, storage: StorageResource) -> dg.MaterializeResult:
    """Meters to send a crew to: each meter whose readings stayed at or below the near-zero threshold
    for at least the minimum duration that day, with the period's start and end (UTC)."""
    day = partition_day(context)
    store = storage.lake_store()
    periods = lake.read_parquet(store, lake.layer_key("faulty_periods", day))
    rows = periods.with_columns(reading_date=pl.lit(day))
    storage.open_warehouse().replace_day("faulty_meters", day, rows)
    lake.mark_day_done(store, day, "faulty_meters")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(rows.height),
            "faulty_meters": dg.MetadataValue.int(rows.get_column("meter_id").n_unique()),
            "preview": preview(periods),
        }
    )
