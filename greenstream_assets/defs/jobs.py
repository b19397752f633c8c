"""Jobs: file ingestion (unpartitioned) and the per-day chain from raw rows to reports."""

import dagster as dg

DAILY_ASSETS = [
    "raw_meter_files",
    "cleansed_readings",
    "quarantined_readings",
    "flagged_anomalies",
    "meter_readings",
    "meter_readings_archive",
    "daily_peaks",
    "faulty_meters",
    "estimated_readings",
    "meter_daily_peaks",
    "faulty_meter_incidents",
    "hourly_meter_features",
    "daily_quality",
]

ingest_job = dg.define_asset_job(
    "ingest_landing_job",
    # The freshness check on landing_files runs on its own schedule, not with every ingestion.
    selection=dg.AssetSelection.assets("landing_files")
    - dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("landing_files"), "yesterday_landed")),
    description="Stage every new or changed landing-zone file by day (what the sensor launches first).",
)
daily_job = dg.define_asset_job(
    "daily_readings_job",
    selection=dg.AssetSelection.assets(*DAILY_ASSETS),
    description="One day from raw rows to the table, the archive and the reports.",
)
