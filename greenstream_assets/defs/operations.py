"""Operating the platform: a freshness check on each day's landing, and alerts for failed runs."""

import json
import os
import urllib.request
from datetime import UTC, datetime, timedelta

import dagster as dg

from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.storage import lake

YESTERDAY_LANDED = "yesterday_landed"
# The hour (UTC) by which yesterday's readings must be in the table; GREENSTREAM_FRESHNESS_HOUR.
DEFAULT_FRESHNESS_HOUR = 9


def utc_now() -> datetime:
    return datetime.now(UTC)


def freshness_hour() -> int:
    return int(os.environ.get("GREENSTREAM_FRESHNESS_HOUR", DEFAULT_FRESHNESS_HOUR))


# On the (unpartitioned) landing asset, not on a day partition: it judges yesterday by the clock,
# so it must not run when someone rebuilds an old day of meter_readings.
@dg.asset_check(
    asset="landing_files",
    name=YESTERDAY_LANDED,
    description=(
        "Warns when yesterday's day partition of meter_readings has not landed by the configured hour "
        "(GREENSTREAM_FRESHNESS_HOUR, UTC, default 9): the meters' files are late or a run failed."
    ),
)
def yesterday_landed(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    now = utc_now()
    yesterday = (now - timedelta(days=1)).date().isoformat()
    landed = yesterday in context.instance.get_materialized_partitions(dg.AssetKey("meter_readings"))
    due = now.hour >= freshness_hour()
    return dg.AssetCheckResult(
        passed=landed or not due,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"partition": yesterday, "landed": landed, "deadline_hour_utc": freshness_hour()},
    )


freshness_job = dg.define_asset_job(
    "freshness_check_job",
    selection=dg.AssetSelection.checks(yesterday_landed),
    description="Evaluates the freshness check on the table (scheduled at the deadline hour).",
)


def freshness_schedule() -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="freshness_check_schedule",
        cron_schedule=f"5 {freshness_hour()} * * *",
        execution_timezone="UTC",
        job=freshness_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Checks at the deadline hour that yesterday's readings landed.",
    )


def alert_record(run: dg.DagsterRun, error: str) -> dict[str, str | None]:
    """What an operator needs to act on a failed run; never resources, config or credentials."""
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "error": error[:2000],
        "failed_at": datetime.now(UTC).isoformat(),
    }


@dg.run_failure_sensor(
    name="run_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description=(
        "Writes an alert record (run, partition, error) to the lake's alerts/ for every failed run, and "
        "posts it to GREENSTREAM_ALERT_WEBHOOK (a Slack or e-mail gateway webhook) when that is set."
    ),
)
def run_failure_alerts(context: dg.RunFailureSensorContext, storage: StorageResource) -> None:
    error = context.failure_event.message or "run failed"
    record = alert_record(context.dagster_run, error)
    lake.write_json(storage.lake_store(), f"alerts/run_failures/{context.dagster_run.run_id}.json", record)
    webhook = os.environ.get("GREENSTREAM_ALERT_WEBHOOK")
    if webhook:
        text = (
            f"GreenStream run {record['run_id']} ({record['job']}, day {record['partition']}) failed: {error}"
        )
        request = urllib.request.Request(
            webhook,
            data=json.dumps({"text": text[:3000]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=10).close()
