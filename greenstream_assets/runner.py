"""What ``greenstream run`` does: one sensor tick's work, executed synchronously on the Dagster
instance at DAGSTER_HOME (so every run shows in the UI), with a summary per day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import dagster as dg

from greenstream_assets import ingestion
from greenstream_assets.defs.jobs import daily_job, ingest_job
from greenstream_assets.defs.resources import StorageResource

# The runs keep their full logs in the instance (and the UI); the terminal shows warnings only.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}

SUMMARY_FIELDS = [
    ("kept", "cleansed_readings", "dagster/row_count"),
    ("quarantined", "quarantined_readings", "dagster/row_count"),
    ("collapsed", "cleansed_readings", "rows_collapsed"),
    ("anomalies", "flagged_anomalies", "anomalies"),
    ("faulty_meters", "faulty_meters", "faulty_meters"),
    ("peak_kw", "daily_peaks", "peak_kw"),
    ("peak_ts", "daily_peaks", "peak_ts"),
]


@dataclass
class RunSummary:
    ingest: dict[str, object] = field(default_factory=dict)
    days: dict[date, dict[str, object]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            "ingested: " + ", ".join(f"{k}={v}" for k, v in self.ingest.items())
            if self.ingest
            else "ingested: nothing new"
        ]
        if not self.days:
            lines.append("no day needed a run")
        header = ["day", *(name for name, _, _ in SUMMARY_FIELDS), "status"]
        rows = [header] + [
            [
                d.isoformat(),
                *(str(values.get(name, "-")) for name, _, _ in SUMMARY_FIELDS),
                str(values["status"]),
            ]
            for d, values in sorted(self.days.items())
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        if self.days:
            lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
        return "\n".join(lines)


def run_landing_zone(
    day: date | None = None,
    instance: dg.DagsterInstance | None = None,
    resources: dict[str, object] | None = None,
) -> RunSummary:
    """Ingest what is new, then run every stale day (or just ``day``)."""
    from greenstream_assets.definitions import build_definitions

    defs = build_definitions(resources)
    instance = instance or dg.DagsterInstance.get()
    summary = RunSummary()

    ingest = defs.resolve_job_def(ingest_job.name).execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET
    )
    if not ingest.success:
        summary.failed.append(f"ingestion run {ingest.run_id} failed")
        return summary
    for event in ingest.get_asset_materialization_events():
        meta = event.materialization.metadata
        summary.ingest = {k: meta[k].value for k in ("files_staged", "files_failed", "rows_staged")}

    storage = (resources or {}).get("storage") or StorageResource()
    lake_store = storage.lake_store()
    days = [day] if day else sorted(ingestion.stale_days(lake_store, ingestion.load_ledger(lake_store)))
    job = defs.resolve_job_def(daily_job.name)
    for each in days:
        result = job.execute_in_process(
            partition_key=each.isoformat(), instance=instance, raise_on_error=False, run_config=QUIET
        )
        values: dict[str, object] = {"status": "ok" if result.success else "FAILED"}
        for event in result.get_asset_materialization_events():
            asset = event.asset_key.to_user_string()
            meta = event.materialization.metadata
            for name, source, key in SUMMARY_FIELDS:
                if source == asset and key in meta:
                    values[name] = meta[key].value
        failed_checks, warnings = [], []
        for event in result.all_events:
            if event.event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                continue
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                warned = evaluation.severity == dg.AssetCheckSeverity.WARN
                (warnings if warned else failed_checks).append(evaluation.check_name)
        if failed_checks:
            values["status"] = "CHECKS FAILED: " + ",".join(failed_checks)
        elif warnings and result.success:
            values["status"] = "ok (warn: " + ",".join(warnings) + ")"
        if not result.success or failed_checks:
            summary.failed.append(f"{each.isoformat()}: {values['status']} (run {result.run_id})")
        summary.days[each] = values
    return summary
