"""How operators run the platform, end to end against `dagster dev` (webserver + daemon) on a
throwaway instance: the landing-zone sensor at work, a partition materialized the way the UI does
it, the lineage and every check of a day, and a warehouse outage made whole by a re-execution from
failure and a backfill. Everything is asked through GraphQL, the API the UI itself uses."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pytest

from greenstream_assets_tests.e2e.conftest import (
    CORE_CHECKS,
    DAILY_JOB,
    INGEST_JOB,
    SENSOR,
    LocalPlatform,
    meter_day_file,
)
from greenstream_assets_tests.e2e.dagster_dev import FINISHED, DagsterDev

pytestmark = [
    pytest.mark.slow,
    # dagster-graphql's client still calls gql with arguments gql has deprecated.
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

METERS = ["MTR-001", "MTR-002", "MTR-003", "MTR-004"]
D1, D2 = date(2024, 3, 4), date(2024, 3, 5)
FIRST_UPLOAD = [
    meter_day_file("upload-01/2024-03-04.csv", D1, METERS),
    meter_day_file("upload-01/2024-03-05.csv", D2, METERS),
]
# A meter that reports a day late: a file for D1 only.
LATE_FILE = meter_day_file("upload-02/LATE-1-2024-03-04.csv", D1, ["LATE-1"], defects=False)

# The README's lineage: (upstream, downstream) and each asset's group.
CORE_EDGES = {
    ("landing_files", "raw_meter_files"),
    ("raw_meter_files", "cleansed_readings"),
    ("raw_meter_files", "quarantined_readings"),
    ("cleansed_readings", "flagged_anomalies"),
    ("flagged_anomalies", "meter_readings"),
    ("flagged_anomalies", "meter_readings_archive"),
    ("meter_readings", "daily_peaks"),
    ("meter_readings_archive", "daily_peaks"),
    ("flagged_anomalies", "faulty_meters"),
    ("meter_readings", "faulty_meters"),
}
CORE_GROUPS = {
    "landing_files": "ingestion",
    "raw_meter_files": "ingestion",
    "cleansed_readings": "quality",
    "quarantined_readings": "quality",
    "flagged_anomalies": "quality",
    "meter_readings": "warehouse",
    "meter_readings_archive": "warehouse",
    "daily_peaks": "reports",
    "faulty_meters": "reports",
}
BLOCKING_CHECKS = {("cleansed_readings", "cleansed_schema"), ("cleansed_readings", "rows_conserved")}

RUN_QUERY = """
query ($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      status
      parentRunId
      stepKeysToExecute
      tags { key value }
      assetMaterializations { assetKey { path } partition }
    }
  }
}
"""
REEXECUTE_MUTATION = """
mutation ($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
  }
}
"""
BACKFILL_MUTATION = """
mutation ($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}
"""
BACKFILL_QUERY = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status partitionNames }
  }
}
"""


@dataclass
class Operations:
    server: DagsterDev
    platform: LocalPlatform

    def new_runs(self, before: set[str]) -> list[dict]:
        return [run for run in self.server.runs() if run["runId"] not in before]

    def run_ids(self) -> set[str]:
        return {run["runId"] for run in self.server.runs()}

    def wait_for_sensor_runs(self, before: set[str], days: set[str], timeout: float = 240) -> list[dict]:
        """Wait until the sensor's runs since ``before`` include a daily run for each of ``days``
        and all of them have finished; return them."""

        def done() -> list[dict] | None:
            runs = self.new_runs(before)
            launched = {r["tags"].get("dagster/partition") for r in runs if r["jobName"] == DAILY_JOB}
            return runs if days <= launched and all(r["status"] in FINISHED for r in runs) else None

        return self.server.wait_until(
            f"the sensor's runs for {sorted(days)}",
            done,
            timeout,
            state=lambda: summary(self.new_runs(before)),
        )


def summary(runs: list[dict]) -> list[tuple[str, str | None, str]]:
    """(job, partition, status) of each run, sorted: what a person reads on the Runs page."""
    rows = [(r["jobName"], r["tags"].get("dagster/partition"), r["status"]) for r in runs]
    return sorted(rows, key=lambda row: (row[0], row[1] or "", row[2]))


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operations]:
    """One `dagster dev` for the module, its sensor running, on a throwaway platform. The first
    upload (two days) lands while the platform starts, so the sensor's first tick finds it."""
    platform = LocalPlatform(tmp_path_factory.mktemp("operations"))
    platform.drop(*FIRST_UPLOAD)
    server = DagsterDev(platform.root / "home", platform.env).start()
    try:
        yield Operations(server, platform)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def landed(ops: Operations) -> list[dict]:
    """The first upload processed by the running sensor: the runs it launched."""
    return ops.wait_for_sensor_runs(set(), {f.day.isoformat() for f in FIRST_UPLOAD})


def assert_check_metadata(execution: dict, expected: dict[str, int]) -> None:
    assert execution["status"] == "SUCCEEDED", execution
    metadata = execution["evaluation"]["metadata"]
    assert {key: metadata.get(key) for key in expected} == expected, metadata
    assert "failure_sample" not in metadata, metadata


def test_the_sensor_runs_exactly_the_days_files_touch_and_a_late_file_reruns_only_its_day(
    ops: Operations, landed: list[dict]
) -> None:
    server, platform = ops.server, ops.platform
    # One ingestion run, then one run per day the files touch: nothing else, all green.
    assert summary(landed) == [
        (DAILY_JOB, D1.isoformat(), "SUCCESS"),
        (DAILY_JOB, D2.isoformat(), "SUCCESS"),
        (INGEST_JOB, None, "SUCCESS"),
    ]
    assert {run["tags"]["dagster/sensor_name"] for run in landed} == {SENSOR}
    daily = {run["tags"]["dagster/partition"]: run for run in landed if run["jobName"] == DAILY_JOB}
    for day, run in daily.items():
        # <day>:<digest of the day's files>:<newest ledger batch (chunk) that staged rows for it>
        key = rf"{day}:[0-9a-f]{{16}}:\d{{8}}T\d{{12}}Z-[0-9a-f]{{6}}-\d{{4}}"
        assert re.fullmatch(key, run["tags"]["dagster/run_key"]), run["tags"]

    # Every core check recorded its result for each day, in that day's run, with exact counts.
    for file in FIRST_UPLOAD:
        day = file.day.isoformat()
        for (asset, check), expected in file.check_metadata().items():
            executions = server.check_executions(asset, check, day)
            [execution] = [e for e in executions if e["runId"] == daily[day]["runId"]]
            assert execution["partition"] == day
            assert_check_metadata(execution, expected)

    # A late file for D1: D1, and only D1, runs again (a new run key: its files changed).
    before = ops.run_ids()
    platform.drop(LATE_FILE)
    late = ops.wait_for_sensor_runs(before, {D1.isoformat()})
    assert summary(late) == [(DAILY_JOB, D1.isoformat(), "SUCCESS"), (INGEST_JOB, None, "SUCCESS")]
    [rerun] = [run for run in late if run["jobName"] == DAILY_JOB]
    assert rerun["tags"]["dagster/run_key"] != daily[D1.isoformat()]["tags"]["dagster/run_key"]

    server.wait_until_idle()
    counts = platform.rows_per_day()
    assert counts[D1.isoformat()] == FIRST_UPLOAD[0].kept + LATE_FILE.kept
    assert counts[D2.isoformat()] == FIRST_UPLOAD[1].kept
    late_rows = platform.query(
        "SELECT count(*), count(DISTINCT reading_ts) FROM meter_readings WHERE source_file = ?",
        [LATE_FILE.key],
    )
    assert late_rows == [(LATE_FILE.kept, LATE_FILE.kept)]
    assert platform.duplicate_readings() == 0


def test_one_partition_materialized_as_the_ui_does_succeeds_and_replaces_its_day(
    ops: Operations, landed: list[dict]
) -> None:
    server, platform = ops.server, ops.platform
    day, file = D2.isoformat(), FIRST_UPLOAD[1]
    # The asset page's Materialize button for one partition of meter_readings...
    ui_run = server.launch_materialization(["meter_readings"], day)
    # ...and the same for daily_peaks from a script, through the Python GraphQL client.
    repository = server.repository()
    script_run = server.client.submit_job_execution(
        DAILY_JOB,
        repository_location_name=repository["repositoryLocationName"],
        repository_name=repository["repositoryName"],
        tags={"dagster/partition": day},
        asset_selection=["daily_peaks"],
    )
    assert server.wait_for_run(ui_run) == "SUCCESS", server.log_tail()
    assert server.wait_for_run(script_run) == "SUCCESS", server.log_tail()

    run = server.graphql(RUN_QUERY, {"runId": ui_run})["runOrError"]
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dagster/partition"] == day and tags["dagster/from_ui"] == "true"
    assert [(m["assetKey"]["path"], m["partition"]) for m in run["assetMaterializations"]] == [
        (["meter_readings"], day)
    ]
    [check] = [
        e for e in server.check_executions("meter_readings", "table_schema", day) if e["runId"] == ui_run
    ]
    assert_check_metadata(check, file.check_metadata()[("meter_readings", "table_schema")])
    script = server.graphql(RUN_QUERY, {"runId": script_run})["runOrError"]
    assert [(m["assetKey"]["path"], m["partition"]) for m in script["assetMaterializations"]] == [
        (["daily_peaks"], day)
    ]

    # Re-materializing replaced the day: the same rows, once; one peak row for the day.
    server.wait_until_idle()
    assert platform.rows_per_day()[day] == file.kept
    assert platform.rows_per_day("daily_peaks")[day] == 1
    assert platform.duplicate_readings() == 0


def test_the_lineage_and_every_check_of_a_materialized_day(ops: Operations, landed: list[dict]) -> None:
    server = ops.server
    nodes = {node["assetKey"]["path"][0]: node for node in server.asset_nodes()}
    edges = {(dep["path"][0], name) for name, node in nodes.items() for dep in node["dependencyKeys"]}
    assert not CORE_EDGES - edges, f"missing edges: {sorted(CORE_EDGES - edges)}"
    assert {asset: nodes[asset]["groupName"] for asset in CORE_GROUPS} == CORE_GROUPS
    assert [name for name in CORE_GROUPS if nodes[name]["isPartitioned"]] == list(CORE_GROUPS)[1:]

    checks = {
        (asset, check["name"]): check
        for asset, node in nodes.items()
        for check in node["assetChecksOrError"]["checks"]
    }
    assert not set(CORE_CHECKS) - set(checks), sorted(checks)
    assert {key for key in CORE_CHECKS if checks[key]["blocking"]} == BLOCKING_CHECKS

    # Every per-day check of the code location has a result for a materialized day, with its
    # metadata; the core checks pass with the exact counts of the day's file. (Checks without
    # partitions, evaluated on their own schedule, have no result per day.)
    day, file = D2.isoformat(), FIRST_UPLOAD[1]
    daily_checks = sorted(key for key, check in checks.items() if check["partitionDefinition"])
    assert not set(CORE_CHECKS) - set(daily_checks), daily_checks
    for asset, check in daily_checks:
        executions = server.check_executions(asset, check, day)
        assert executions, f"{asset}:{check} has no execution for {day}"
        latest = executions[0]
        assert latest["evaluation"] is not None, (asset, check, latest)
        assert latest["evaluation"]["metadata"], f"{asset}:{check} recorded no metadata"
    for (asset, check), expected in file.check_metadata().items():
        assert_check_metadata(server.check_executions(asset, check, day)[0], expected)


def test_a_warehouse_outage_is_made_whole_by_a_rerun_from_failure_and_a_backfill(
    ops: Operations, landed: list[dict]
) -> None:
    server, platform = ops.server, ops.platform
    d1, d2 = D1.isoformat(), D2.isoformat()
    job_assets = [
        node["assetKey"]["path"][0] for node in server.asset_nodes() if DAILY_JOB in node["jobNames"]
    ]
    server.wait_until_idle()
    before = platform.rows_per_day()

    # The outage: the warehouse's folder is a regular file, so DuckDB cannot open the database.
    # An operator reloads both days from the job page (one run per partition): both fail.
    away = platform.root / "warehouse-during-outage"
    platform.warehouse_dir.rename(away)
    platform.warehouse_dir.write_text("not a folder: the warehouse is down\n")
    failed = {
        day: server.launch_materialization(job_assets, day, preferred_job=DAILY_JOB) for day in (d1, d2)
    }
    assert {day: server.wait_for_run(run_id) for day, run_id in failed.items()} == {
        d1: "FAILURE",
        d2: "FAILURE",
    }
    # The UI shows the table's partitions as failed; the steps before the warehouse succeeded.
    table = server.partition_statuses("meter_readings")
    assert (table.get(d1), table.get(d2)) == ("FAILED", "FAILED"), table
    raw = server.partition_statuses("raw_meter_files")
    assert (raw.get(d1), raw.get(d2)) == ("MATERIALIZED", "MATERIALIZED"), raw

    # The warehouse is back.
    platform.warehouse_dir.unlink()
    away.rename(platform.warehouse_dir)

    # D1: "Re-execute from failure" on its failed run (only the failed and skipped steps run);
    # meanwhile the other failed day goes in a backfill, as the job page's "Failed" selection sends it.
    failed_days = sorted(d for d, s in server.partition_statuses("meter_readings").items() if s == "FAILED")
    assert failed_days == [d1, d2]
    result = server.graphql(REEXECUTE_MUTATION, {"parentRunId": failed[d1]})["launchRunReexecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    rerun_id = result["run"]["runId"]
    params = {
        "selector": {
            "partitionSetName": f"{DAILY_JOB}_partition_set",
            "repositorySelector": server.repository(),
        },
        "assetSelection": [{"path": [asset]} for asset in job_assets],
        "partitionNames": [day for day in failed_days if day != d1],
        "fromFailure": False,
        "tags": [{"key": "dagster/from_ui", "value": "true"}],
    }
    launched = server.graphql(BACKFILL_MUTATION, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    assert server.wait_for_run(rerun_id) == "SUCCESS", server.log_tail()
    rerun = server.graphql(RUN_QUERY, {"runId": rerun_id})["runOrError"]
    assert rerun["parentRunId"] == failed[d1]
    assert "load_meter_readings" in rerun["stepKeysToExecute"], rerun["stepKeysToExecute"]
    assert "validate_day" not in rerun["stepKeysToExecute"], rerun["stepKeysToExecute"]

    def backfill_done() -> list[dict] | None:
        status = server.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]["status"]
        runs = server.runs(tags={"dagster/backfill": backfill_id})
        finished = runs and all(run["status"] in FINISHED for run in runs)
        return runs if status != "REQUESTED" and finished else None

    backfill_runs = server.wait_until(
        f"backfill {backfill_id}",
        backfill_done,
        state=lambda: summary(server.runs(tags={"dagster/backfill": backfill_id})),
    )
    assert summary(backfill_runs) == [(DAILY_JOB, d2, "SUCCESS")]

    # Everything is green, and every reading is in the table exactly once.
    server.wait_until_idle()
    for asset in job_assets:
        statuses = server.partition_statuses(asset)
        assert (statuses.get(d1), statuses.get(d2)) == ("MATERIALIZED", "MATERIALIZED"), (asset, statuses)
    counts = platform.rows_per_day()
    assert (counts[d1], counts[d2]) == (before[d1], FIRST_UPLOAD[1].kept)
    for day, run_id in ((d1, rerun_id), (d2, backfill_runs[0]["runId"])):
        [check] = [
            e for e in server.check_executions("meter_readings", "table_schema", day) if e["runId"] == run_id
        ]
        assert_check_metadata(check, {"failures": 0, "rows_checked": counts[day]})
    peaks = platform.rows_per_day("daily_peaks")
    assert (peaks[d1], peaks[d2]) == (1, 1)
    assert platform.duplicate_readings() == 0

    # And the operator was told: the run-failure sensor left an alert for each failed run.
    def alerted() -> list[dict] | None:
        folder = platform.lake / "alerts" / "run_failures"
        records = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
        mine = [record for record in records if record["run_id"] in failed.values()]
        return mine if len(mine) == len(failed) else None

    alerts = server.wait_until("an alert for each failed run", alerted, timeout=120)
    assert sorted((a["job"], a["partition"]) for a in alerts) == [(DAILY_JOB, d1), (DAILY_JOB, d2)]


def test_day_files_say_what_the_rules_make_of_them() -> None:
    """The expectations above rest on this arithmetic: every row kept, quarantined or collapsed."""
    file = FIRST_UPLOAD[0]
    assert (file.raw_rows, file.kept, file.quarantined, file.collapsed) == (101, 98, 2, 1)
    assert file.raw_rows == file.kept + file.quarantined + file.collapsed
    assert file.text.count("\n") == file.raw_rows + 1
