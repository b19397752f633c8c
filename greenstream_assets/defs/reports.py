"""Reports people act on: the day's system peak and the meters found stuck near zero.

Both are made by the step that loads the day's readings (``load_meter_readings``), after the table
and the archive they are made from: the peak from the slices it loads, as they go by. Either asset
materialized alone reads what it is made from, as last published.
"""

from datetime import date

import dagster as dg
import polars as pl

from greenstream_assets.defs.common import preview
from greenstream_assets.rules.reports import system_peak
from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import BlobStore
from greenstream_assets.storage.warehouse import Warehouse

DAILY_PEAKS = dg.AssetKey("daily_peaks")
FAULTY_METERS = dg.AssetKey("faulty_meters")

DAILY_PEAKS_SPEC = dg.AssetSpec(
    DAILY_PEAKS,
    deps=["meter_readings", "meter_readings_archive"],
    group_name="reports",
    kinds={"duckdb", "table"},
    description=(
        "The day's system peak: the instant with the highest total demand across all meters, its kW "
        "and how many meters reported in it. Missing and anomalous readings never enter a peak."
    ),
)
FAULTY_METERS_SPEC = dg.AssetSpec(
    FAULTY_METERS,
    deps=["flagged_anomalies", "meter_readings"],
    group_name="reports",
    kinds={"duckdb", "table"},
    description=(
        "Meters to send a crew to: each meter whose readings stayed at or below the near-zero "
        "threshold for at least the minimum duration that day, with the period's start and end (UTC)."
    ),
)


def archived_peak(store: BlobStore, day: date) -> pl.DataFrame:
    """The day's system peak from its archive, as last published."""
    with lake.local_copy(store, lake.archive_key(day)) as path:
        # Scanned, not read: the peak's totals need no meter id, and its meter count reads only the
        # peak instant's (a day's 4.8M ids decoded for one count cost most of the step).
        return system_peak(
            pl.scan_parquet(path).select("meter_id", "reading_ts", "energy_kw", "is_missing", "is_anomaly"),
            day,
        )


def publish_daily_peaks(
    store: BlobStore, warehouse: Warehouse, day: date, peak: pl.DataFrame
) -> dg.MaterializeResult:
    """``peak`` (``rules.reports.system_peak``'s row) to the table daily_peaks."""
    warehouse.replace_day("daily_peaks", day, peak)
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
        asset_key=DAILY_PEAKS,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(peak.height),
            **found,
            "meters_reporting": dg.MetadataValue.int(int(peak.item(0, "meters_reporting"))),
            "preview": preview(peak),
        },
    )


def publish_faulty_meters(store: BlobStore, warehouse: Warehouse, day: date) -> dg.MaterializeResult:
    """The faulty periods validate_day found, to the table faulty_meters."""
    periods = lake.read_parquet(store, lake.layer_key("faulty_periods", day))
    rows = periods.with_columns(reading_date=pl.lit(day))
    warehouse.replace_day("faulty_meters", day, rows)
    lake.mark_day_done(store, day, "faulty_meters")
    return dg.MaterializeResult(
        asset_key=FAULTY_METERS,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(rows.height),
            "faulty_meters": dg.MetadataValue.int(rows.get_column("meter_id").n_unique()),
            "preview": preview(periods),
        },
    )
