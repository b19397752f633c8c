"""The landing-zone sensor: new files are staged, then exactly the days they touch are run."""

import hashlib
import json
from datetime import date

import dagster as dg

from greenstream_assets import ingestion
from greenstream_assets.defs.jobs import daily_job, ingest_job
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.storage import lake

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    jobs=[ingest_job, daily_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Watches the landing zone. New or changed files launch an ingestion run; once staged, each "
        "day their readings fall on (late days included) gets a run of daily_readings_job."
    ),
)
def landing_zone_sensor(context: dg.SensorEvaluationContext, storage: StorageResource):
    lake_store = storage.lake_store()
    # The batch notes first, then the ledger. An ingestion writes its ledger rows before its note,
    # so a ledger read after the notes holds every batch they name; read before, an ingestion
    # finishing in between would have its note taken as seen and its days judged on the old ledger.
    batches, cursor = ingestion.batches_after(lake_store, json.loads(context.cursor or "{}"))
    days = set()
    for batch in batches:
        note = lake.read_json(lake_store, f"{lake.LEDGER_BATCHES}{batch}.json")
        days |= {date.fromisoformat(d) for d in note["days"]}
    ledger = ingestion.load_ledger(lake_store)
    requests: list[dg.RunRequest] = []

    unseen = ingestion.unseen_objects(storage.landing_store(), ledger)
    ingest_running = context.instance.get_runs_count(
        dg.RunsFilter(job_name=ingest_job.name, statuses=IN_FLIGHT)
    )
    if unseen and not ingest_running:
        # The versions to stage, and the ledger's newest batch: a key put back to content it had
        # before has its earlier version (on S3 the ETag), but the ledger has moved on since.
        newest_batch = ledger.get_column("batch").max() if ledger.height else ""
        versions = "\n".join([*sorted(f"{o.key}\t{o.version}" for o in unseen), str(newest_batch)])
        requests.append(
            dg.RunRequest(
                job_name=ingest_job.name,
                run_key="ingest:" + hashlib.sha256(versions.encode()).hexdigest()[:20],
                tags={"greenstream/new_files": str(len(unseen))},
            )
        )

    newest = ingestion.newest_batch_per_day(ledger)
    for day, digest in ingestion.stale_days(lake_store, ledger, days).items():
        requests.append(
            dg.RunRequest(
                job_name=daily_job.name,
                partition_key=day.isoformat(),
                # The day's files, and the newest batch that staged rows for it: a day whose files
                # go back to an earlier set (a key put back as it was) is a new request, where the
                # digest alone would repeat a run key the daemon has already used and so skip it.
                run_key=f"{day.isoformat()}:{digest[:16]}:{newest.get(day, '')}",
            )
        )
    if not requests:
        reason = "ingestion already running" if unseen else "no new or changed files"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=json.dumps(cursor))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))
