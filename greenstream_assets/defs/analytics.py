"""Outputs people act on beyond the core chain: VEE estimates and completeness, the per-meter peak
report, the faulty-meter registry, forecasting features, and data quality over time."""

from datetime import date, timedelta

import dagster as dg
import polars as pl

from greenstream_assets.defs.checks import daily_check, markdown_table
from greenstream_assets.defs.common import WAREHOUSE_POOL, daily_asset, partition_day, preview
from greenstream_assets.defs.resources import RulesResource, StorageResource
from greenstream_assets.rules import drift, features, incidents, meter_reports, vee
from greenstream_assets.rules.validation import (
    CONFLICTING_DUPLICATE,
    INVALID_TIMESTAMP,
    INVALID_UNIT,
    NEGATIVE_VALUE,
    TIMESTAMP_OUT_OF_RANGE,
)
from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import BlobStore

NEW_FAULTY_INCIDENTS = "new_faulty_incidents"
QUALITY_DRIFT = "quality_drift"
HISTORY_COLUMNS = ["meter_id", "reading_ts", "energy_kw", "is_missing", "is_anomaly", "is_faulty"]


def _archived(store: BlobStore, days: list[date]) -> pl.DataFrame | None:
    frames = [
        frame.select(HISTORY_COLUMNS)
        for day in days
        if (frame := lake.read_parquet_if_exists(store, lake.archive_key(day))) is not None
    ]
    return pl.concat(frames) if frames else None


@daily_asset(
    group_name="quality",
    deps=["flagged_anomalies", "meter_readings_archive"],
    kinds={"polars", "parquet"},
    pool=WAREHOUSE_POOL,
)
def estimated_readings(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """Validation, Estimation, Editing: every meter's full interval grid for the day with a quality
    code per reading (actual, estimated_linear, estimated_history, missing, anomaly, faulty). Short gaps
    are interpolated between actual neighbours, longer ones estimated from the same weekday and time
    over previous weeks; what the meter sent is never overwritten (energy_kw keeps it, estimated_kw
    holds the estimate). Parquet under vee/estimated_readings/; per-meter completeness (expected vs
    received intervals, DST-aware) in the table meter_completeness."""
    day = partition_day(context)
    config = rules.config()
    store = storage.lake_store()
    readings = lake.read_parquet(store, lake.layer_key("flagged_anomalies", day))
    history_days = [day - timedelta(days=1)] + [
        day - timedelta(weeks=w) for w in range(1, config.history_weeks + 1)
    ]
    estimated = vee.estimate(readings, _archived(store, history_days), config, day)
    lake.write_parquet(store, lake.estimated_key(day), estimated)
    complete = vee.completeness(readings, day, config).with_columns(reading_date=pl.lit(day))
    storage.open_warehouse().replace_day("meter_completeness", day, complete)
    codes = dict(estimated.group_by("quality_code").len().iter_rows())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(estimated.height),
            **{f"intervals_{code}": dg.MetadataValue.int(codes.get(code, 0)) for code in vee.QUALITY_CODES},
            "mean_completeness": dg.MetadataValue.float(
                float(complete.get_column("completeness_ratio").mean() or 0)
            ),
        }
    )


@daily_asset(
    group_name="reports",
    deps=["estimated_readings"],
    kinds={"polars", "table"},
    pool=WAREHOUSE_POOL,
)
def meter_daily_peaks(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """Per meter and day: peak kW and when, energy in kWh (peak and off-peak periods), average kW
    and load factor. Missing and anomalous readings never set a peak; estimated intervals count in
    energy and are reported in their own column. The top meters by peak demand are previewed here."""
    day = partition_day(context)
    config = rules.config()
    estimated = lake.read_parquet(storage.lake_store(), lake.estimated_key(day))
    report = meter_reports.meter_daily_report(estimated, config, day)
    storage.open_warehouse().replace_day("meter_daily_peaks", day, report)
    top = meter_reports.top_meters(report, config.top_n_meters)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(report.height),
            "total_energy_kwh": dg.MetadataValue.float(float(report.get_column("energy_kwh").sum() or 0)),
            f"top_{config.top_n_meters}_meters": dg.MetadataValue.md(
                markdown_table(top.select("meter_id", "peak_kw", "peak_ts", "energy_kwh", "load_factor"))
            ),
        }
    )


@daily_asset(
    group_name="reports",
    deps=["flagged_anomalies", "meter_readings_archive"],
    kinds={"polars", "table"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        daily_check(
            NEW_FAULTY_INCIDENTS,
            "faulty_meter_incidents",
            description="Warns with the list of faulty-meter incidents that began on this day.",
        )
    ],
)
def faulty_meter_incidents(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """The faulty-meter registry: one incident per meter and stuck period (start, end, duration,
    open/closed), followed across midnight using the previous day's readings and open incidents, and
    closed when the meter recovers. Each day's view of its incidents is stored in
    faulty_incident_days; the view faulty_meter_incidents keeps each incident's latest state, so
    re-running a day never duplicates one."""
    day = partition_day(context)
    config = rules.config()
    store = storage.lake_store()
    readings = lake.read_parquet(store, lake.layer_key("flagged_anomalies", day))
    previous = day - timedelta(days=1)
    tail = _archived(store, [previous])
    previous_open = lake.read_parquet_if_exists(store, lake.layer_key("faulty_incidents", previous))
    found = incidents.day_incidents(
        tail if tail is not None else readings.clear(), readings, config, previous_open
    )
    lake.write_parquet(store, lake.layer_key("faulty_incidents", day), found)
    storage.open_warehouse().replace_day(
        "faulty_incident_days", day, found.with_columns(reading_date=pl.lit(day))
    )
    known = (
        previous_open.select(incidents.KEY)
        if previous_open is not None
        else found.clear().select(incidents.KEY)
    )
    new = found.join(known, on=list(incidents.KEY), how="anti")
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(found.height),
            "open_incidents": dg.MetadataValue.int(found.filter(pl.col("status") == incidents.OPEN).height),
            "new_incidents": dg.MetadataValue.int(new.height),
        }
    )
    yield dg.AssetCheckResult(
        check_name=NEW_FAULTY_INCIDENTS,
        passed=new.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "new_incidents": new.height,
            "incidents": dg.MetadataValue.md(
                markdown_table(new.select("meter_id", "start_ts", "status", "duration_hours").head(50))
            ),
        },
    )


@daily_asset(
    group_name="reports",
    deps=["estimated_readings"],
    kinds={"polars", "parquet"},
)
def hourly_meter_features(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """Forecasting-ready data: per meter and local hour, kWh, peak kW, share of estimated intervals,
    local hour, weekday, weekend and holiday flags, and the previous day's and previous week's
    same-hour kWh. Parquet under features/hourly/date=YYYY-MM-DD/ (hive layout, one line to load)."""
    day = partition_day(context)
    store = storage.lake_store()
    estimated = lake.read_parquet(store, lake.estimated_key(day))
    history = [
        frame
        for back in (1, 7)
        if (frame := lake.read_parquet_if_exists(store, lake.features_key(day - timedelta(days=back))))
        is not None
    ]
    table = features.hourly_features(estimated, pl.concat(history) if history else None, rules.config())
    lake.write_parquet(store, lake.features_key(day), table)
    return dg.MaterializeResult(
        metadata={"dagster/row_count": dg.MetadataValue.int(table.height), "preview": preview(table)}
    )


@daily_asset(
    group_name="reports",
    deps=["cleansed_readings", "quarantined_readings", "flagged_anomalies", "estimated_readings"],
    kinds={"polars", "table"},
    pool=WAREHOUSE_POOL,
    check_specs=[
        daily_check(
            QUALITY_DRIFT,
            "daily_quality",
            description=(
                "Warns when the day's rate of anomalies or of invalid rows exceeds 3x its trailing 14-day "
                "median: a firmware or unit change upstream."
            ),
        )
    ],
)
def daily_quality(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """Per-rule counts for the day (invalid units and timestamps, duplicates, negatives, missing,
    anomalies, faulty meters, estimated intervals) as numeric metadata the UI plots over time, and as
    the table daily_quality that the drift check compares against."""
    day = partition_day(context)
    config = rules.config()
    store = storage.lake_store()
    stats = lake.read_json(store, lake.validation_stats_key(day))
    reasons = stats["reasons"]
    flagged = lake.read_parquet(store, lake.layer_key("flagged_anomalies", day))
    periods = lake.read_parquet(store, lake.layer_key("faulty_periods", day))
    estimated = lake.read_parquet(store, lake.estimated_key(day))
    quarantined = sum(reasons.values())
    row = {
        "reading_date": day,
        "rows_in": stats["rows_in"],
        "rows_kept": flagged.height,
        "rows_quarantined": quarantined,
        "rows_collapsed": stats["rows_collapsed"],
        "invalid_rows": quarantined,
        "invalid_units": reasons[INVALID_UNIT],
        "invalid_timestamps": reasons[INVALID_TIMESTAMP] + reasons[TIMESTAMP_OUT_OF_RANGE],
        "conflicting_duplicates": reasons[CONFLICTING_DUPLICATE],
        "negative_values": reasons[NEGATIVE_VALUE],
        "missing_values": int(flagged.get_column("is_missing").sum()),
        "anomalies": int(flagged.get_column("is_anomaly").sum()),
        "faulty_meters": periods.get_column("meter_id").n_unique(),
        "estimated_intervals": estimated.filter(pl.col("quality_code").is_in(vee.ESTIMATED_CODES)).height,
    }
    warehouse = storage.open_warehouse()
    warehouse.replace_day("daily_quality", day, pl.DataFrame([row]))
    window_start = day - timedelta(days=config.drift_window_days)
    history = warehouse.query(
        "SELECT reading_date, rows_in, anomalies, invalid_rows FROM daily_quality "
        "WHERE reading_date >= ? AND reading_date < ?",
        [window_start, day],
    )
    findings = drift.drift_findings(
        history if history.height else pl.DataFrame(schema=drift.DAY_STATS_SCHEMA), row, config
    )
    yield dg.MaterializeResult(
        metadata={k: dg.MetadataValue.int(v) for k, v in row.items() if k != "reading_date"}
    )
    drifted = findings.filter(pl.col("drifted"))
    yield dg.AssetCheckResult(
        check_name=QUALITY_DRIFT,
        passed=drifted.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "drifted_rules": ", ".join(drifted.get_column("rule").to_list()) or "none",
            "findings": dg.MetadataValue.md(markdown_table(findings)),
        },
    )
