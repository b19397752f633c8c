"""Runs that fail: the previous day stays readable, and a rerun ends as a clean run would."""

import subprocess
import sys
from datetime import date

import dagster as dg
import polars as pl
import pytest

from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.jobs import ingest_job
from greenstream_assets.rules import features
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets_tests.conftest import csv, day_job_after_a_change

MON = date(2024, 3, 4)
V1 = csv("M1,2024-03-04T17:00:00Z,1,kW", "M2,2024-03-04T17:00:00Z,2,kW")
V2 = csv("M1,2024-03-04T17:00:00Z,5,kW", "M2,2024-03-04T17:00:00Z,2,kW", "M3,2024-03-04T17:15:00Z,1,kW")


def readings(platform):
    return platform.query("SELECT meter_id, energy_kw FROM meter_readings ORDER BY meter_id").rows()


def test_a_failed_load_keeps_the_previous_day_and_a_rerun_completes_it(platform, monkeypatch):
    resources = {"storage": platform.storage}
    platform.drop("a.csv", V1)
    assert run_landing_zone(instance=platform.instance, resources=resources).failed == []

    warehouse_type = type(platform.storage.open_warehouse())
    original = warehouse_type.replace_day

    def unreachable(self, table, day, rows):
        if table == "meter_readings":
            raise ConnectionError("warehouse unreachable")
        return original(self, table, day, rows)

    platform.drop("a.csv", V2)
    with monkeypatch.context() as patch:
        patch.setattr(warehouse_type, "replace_day", unreachable)
        failed = run_landing_zone(instance=platform.instance, resources=resources)
    assert len(failed.failed) == 1 and failed.failed[0].startswith("2024-03-04: FAILED")
    # The table still holds the previous version of the day, whole.
    assert readings(platform) == [("M1", 1.0), ("M2", 2.0)]
    assert platform.query("SELECT peak_kw FROM daily_peaks").item() == 3.0

    # The day is still stale (its failed run did not finish), so a plain run picks it up again.
    rerun = run_landing_zone(instance=platform.instance, resources=resources)
    assert rerun.failed == [] and list(rerun.days) == [MON]
    assert readings(platform) == [("M1", 5.0), ("M2", 2.0), ("M3", 1.0)]
    assert platform.query("SELECT peak_kw FROM daily_peaks").item() == 7.0
    archived = lake.read_parquet(platform.lake, lake.archive_key(MON))
    assert archived.sort("meter_id").select("meter_id", "energy_kw").rows() == readings(platform)


def test_a_failed_table_load_publishes_no_archive_either(platform, monkeypatch):
    """Table and archive are written from one read of the day: when the load fails, the archive of
    the day stays the previous one, so the two never disagree."""
    resources = {"storage": platform.storage}
    platform.drop("a.csv", V1)
    assert run_landing_zone(instance=platform.instance, resources=resources).failed == []
    before = lake.read_parquet(platform.lake, lake.archive_key(MON))
    warehouse_type = type(platform.storage.open_warehouse())
    original = warehouse_type.replace_day

    def unreachable(self, table, day, rows):
        if table == "meter_readings":
            for _ in rows:  # the load fails after the whole day went through
                pass
            raise ConnectionError("warehouse unreachable")
        return original(self, table, day, rows)

    platform.drop("a.csv", V2)
    with monkeypatch.context() as patch:
        patch.setattr(warehouse_type, "replace_day", unreachable)
        assert run_landing_zone(instance=platform.instance, resources=resources).failed
    assert lake.read_parquet(platform.lake, lake.archive_key(MON)).equals(before)
    assert readings(platform) == [("M1", 1.0), ("M2", 2.0)]


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_a_slice_failing_on_the_reports_thread_publishes_none_of_the_three_outputs(platform, monkeypatch):
    """estimate_and_report makes a slice's features on a thread of its own while the next slices'
    grids are estimated. An error there fails the step before anything is published: the grid, the
    features and the per-meter report keep the previous version, and a rerun completes the day."""
    resources = {"storage": platform.storage}
    meters = [f"M{i:02d}" for i in range(12)]
    platform.drop("a.csv", csv(*(f"{m},2024-03-04T17:00:00Z,1,kW" for m in meters)))
    assert run_landing_zone(instance=platform.instance, resources=resources).failed == []
    grid_key, features_key = lake.estimated_key(MON), lake.features_key(MON)
    # 12 meters at 4 rows a slice: three slices, so the second one's features fail with the
    # first slice's already made and the third's grid on its way.
    assert lake.parquet_row_groups(platform.lake, grid_key) == 3
    grid, hourly = lake.read_parquet(platform.lake, grid_key), lake.read_parquet(platform.lake, features_key)
    peaks_sql = "SELECT meter_id, peak_kw FROM meter_daily_peaks ORDER BY meter_id"
    assert platform.query(peaks_sql).rows() == [(m, 1.0) for m in meters]

    original, calls = features.hourly_features, []

    def failing_after_the_first_slice(estimated, history, config):
        calls.append(estimated.get_column("meter_id").n_unique())
        if len(calls) > 1:
            raise OSError("disk full while writing the features")
        return original(estimated, history, config)

    platform.drop("a.csv", csv(*(f"{m},2024-03-04T17:00:00Z,2,kW" for m in meters)))
    with monkeypatch.context() as patch:
        patch.setattr(features, "hourly_features", failing_after_the_first_slice)
        failed = run_landing_zone(instance=platform.instance, resources=resources)
    assert len(failed.failed) == 1 and failed.failed[0].startswith("2024-03-04: FAILED")
    # The first attempt got as far as the second slice (then three retries, each stopped at once).
    assert calls[1] > 0 and len(calls) == 5
    assert lake.read_parquet(platform.lake, grid_key).equals(grid)
    assert lake.read_parquet(platform.lake, features_key).equals(hourly)
    assert platform.query(peaks_sql).rows() == [(m, 1.0) for m in meters]

    assert run_landing_zone(instance=platform.instance, resources=resources).failed == []
    assert platform.query(peaks_sql).rows() == [(m, 2.0) for m in meters]
    at_five = lake.read_parquet(platform.lake, grid_key).filter(pl.col("reading_ts").dt.hour() == 17)
    assert (
        at_five.filter(pl.col("reading_ts").dt.minute() == 0).get_column("value_kw").to_list() == [2.0] * 12
    )
    assert lake.read_parquet(platform.lake, features_key).get_column("meter_id").n_unique() == 12


def test_the_table_and_the_archive_materialize_alone(platform):
    """One op writes both, but either can be materialized by itself (as from its asset page), and
    then only that one is written."""
    job = day_job_after_a_change(platform, V1, V2)
    # Every step up to the flagged layer, then the table alone (the archive keeps version 1), then
    # on a third version the archive alone (the table keeps version 2).
    upstream = ["raw_meter_files", "cleansed_readings", "quarantined_readings", "flagged_anomalies"]

    def materialize(*assets: str) -> dg.ExecuteInProcessResult:
        keys = [dg.AssetKey(a) for a in (*upstream, *assets)]
        result = job.execute_in_process(
            partition_key=MON.isoformat(), instance=platform.instance, asset_selection=keys
        )
        assert result.success
        return result

    def written(result: dg.ExecuteInProcessResult) -> list[str]:
        keys = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        return sorted(keys - set(upstream))

    def archived() -> list[tuple]:
        frame = lake.read_parquet(platform.lake, lake.archive_key(MON)).sort("meter_id")
        return frame.select("meter_id", "energy_kw").rows()

    result = materialize("meter_readings")
    assert written(result) == ["meter_readings"]
    checks = [
        (c.asset_key.to_user_string(), c.check_name, c.passed) for c in result.get_asset_check_evaluations()
    ]
    assert ("meter_readings", "table_schema", True) in checks
    assert not [c for c in checks if c[1] == "archive_matches_table"]
    assert readings(platform) == [("M1", 5.0), ("M2", 2.0), ("M3", 1.0)]
    assert archived() == [("M1", 1.0), ("M2", 2.0)]

    platform.drop("a.csv", csv("M1,2024-03-04T17:00:00Z,7,kW"))
    ingest = build_definitions({"storage": platform.storage}).resolve_job_def(ingest_job.name)
    assert ingest.execute_in_process(instance=platform.instance).success
    result = materialize("meter_readings_archive")
    assert written(result) == ["meter_readings_archive"]
    checks = [
        (c.asset_key.to_user_string(), c.check_name, c.passed) for c in result.get_asset_check_evaluations()
    ]
    assert ("meter_readings_archive", "archive_matches_table", True) in checks
    assert archived() == [("M1", 7.0)]
    assert readings(platform) == [("M1", 5.0), ("M2", 2.0), ("M3", 1.0)]


def test_a_run_killed_while_publishing_the_archive_keeps_the_previous_one(platform, monkeypatch):
    resources = {"storage": platform.storage}
    platform.drop("a.csv", V1)
    assert run_landing_zone(instance=platform.instance, resources=resources).failed == []
    before = lake.read_parquet(platform.lake, lake.archive_key(MON))

    store_type = type(platform.lake)
    original = store_type.write_file

    def killed(self, key, path):
        if key == lake.archive_key(MON):
            raise KeyboardInterrupt("process killed mid-upload")  # not an ordinary error: no retry saves it
        return original(self, key, path)

    platform.drop("a.csv", V2)
    with monkeypatch.context() as patch:
        patch.setattr(store_type, "write_file", killed)
        failed = run_landing_zone(instance=platform.instance, resources=resources)
    assert failed.failed and failed.failed[0].startswith("2024-03-04")
    # Readers still get the whole previous archive.
    assert lake.read_parquet(platform.lake, lake.archive_key(MON)).equals(before)

    rerun = run_landing_zone(instance=platform.instance, resources=resources)
    assert rerun.failed == [] and list(rerun.days) == [MON]
    archived = lake.read_parquet(platform.lake, lake.archive_key(MON)).sort("meter_id")
    assert archived.select("meter_id", "energy_kw").rows() == [("M1", 5.0), ("M2", 2.0), ("M3", 1.0)]
    assert readings(platform) == archived.select("meter_id", "energy_kw").rows()


KILLER = """
import sys, time, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as admin:
    for _ in range(200_000):
        pids = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'greenstream' "
            "AND query ILIKE 'COPY %load%' AND state = 'active'"
        ).fetchall()
        if pids:
            admin.execute("SELECT pg_terminate_backend(%s)", [pids[0][0]])
            print("killed", flush=True)
            break
        time.sleep(0.002)
"""


@pytest.mark.parametrize("platform", ["postgres"], indirect=True)
def test_a_connection_killed_mid_load_is_retried_to_exactly_one_copy(platform, pg_url):
    meters = 4_000
    rows = [
        f"M{m:05d},2024-03-04T{h:02d}:{q * 15:02d}:00Z,1.5,kW"
        for m in range(meters)
        for h in range(24)
        for q in range(4)
    ]
    platform.drop("big.csv", csv(*rows))
    # The killer is its own process (as an operator's pg_terminate_backend would be).
    killer = subprocess.Popen([sys.executable, "-c", KILLER, pg_url], stdout=subprocess.PIPE, text=True)
    summary = run_landing_zone(instance=platform.instance, resources={"storage": platform.storage})
    killer.terminate()
    output, _ = killer.communicate(timeout=30)
    assert output.strip() == "killed"
    assert summary.failed == []
    (run,) = platform.instance.get_runs(filters=dg.RunsFilter(job_name="daily_readings_job"))
    retried = [
        e.dagster_event.step_key
        for e in platform.instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retried == ["load_meter_readings"]
    assert readings_count(platform) == (meters * 96, meters * 96)


def readings_count(platform):
    query = "SELECT count(*) AS n, count(DISTINCT (meter_id, reading_ts)) AS keys FROM meter_readings"
    return platform.query(query).row(0)


@pytest.mark.parametrize("platform", ["postgres"], indirect=True)
def test_postgres_unreachable_then_back_ends_with_one_copy(platform, pg_url):
    from greenstream_assets.defs.resources import StorageResource
    from greenstream_assets_tests.conftest import free_port

    platform.drop("a.csv", V2)
    down = StorageResource(
        landing=platform.storage.landing,
        lake=platform.storage.lake,
        warehouse=f"postgresql://postgres@127.0.0.1:{free_port()}/test",
        warehouse_schema=platform.storage.warehouse_schema,
    )
    failed = run_landing_zone(instance=platform.instance, resources={"storage": down})
    assert len(failed.failed) == 1 and failed.failed[0].startswith("2024-03-04: FAILED")
    # The server is reachable again: the stale day is picked up and loaded once.
    rerun = run_landing_zone(instance=platform.instance, resources={"storage": platform.storage})
    assert rerun.failed == [] and list(rerun.days) == [MON]
    assert readings(platform) == [("M1", 5.0), ("M2", 2.0), ("M3", 1.0)]
    again = run_landing_zone(MON, instance=platform.instance, resources={"storage": platform.storage})
    assert again.failed == []
    assert readings_count(platform) == (3, 3)
