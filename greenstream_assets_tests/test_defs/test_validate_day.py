"""validate_day: raw rows to flagged readings in one step. Its blocking checks still stop what
follows, and each of its four assets can be materialized alone, from what the one before it
last materialized."""

import dataclasses
from datetime import date

import dagster as dg
import polars as pl
import pytest

from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs import quality
from greenstream_assets.defs.jobs import daily_job, ingest_job
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets_tests.conftest import csv, day_job_after_a_change

MON = date(2024, 3, 4)
V1 = csv("M1,2024-03-04T17:00:00Z,1,kW", "M2,2024-03-04T17:00:00Z,2,kW")
V2 = csv("M1,2024-03-04T17:00:00Z,5,kW", "M2,2024-03-04T17:00:00Z,2,kW", "M3,2024-03-04T17:15:00Z,bad,kW")


def flagged(platform) -> list[tuple]:
    frame = lake.read_layer(platform.lake, lake.layer_key("flagged_anomalies", MON))
    return frame.sort("meter_id").select("meter_id", "energy_kw").rows()


def cleansed(platform) -> list[tuple]:
    frame = lake.read_layer(platform.lake, lake.layer_key("cleansed_readings", MON))
    return frame.sort("meter_id").select("meter_id", "energy_kw").rows()


def quarantined(platform) -> list[tuple]:
    rows = lake.read_jsonl(platform.lake, lake.quarantine_key(MON))
    return rows.select("meter_id", "reason").rows() if rows.height else []


def table(platform) -> list[tuple]:
    return platform.query("SELECT meter_id, energy_kw FROM meter_readings ORDER BY meter_id").rows()


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_a_failed_blocking_check_publishes_no_flags_and_stops_the_day(platform, monkeypatch):
    """cleansed_readings' blocking checks fail: the step fails with the checks' names, the checks'
    results are recorded, flagged_anomalies keeps its previous layer and is not materialized, and
    nothing after it runs. Once the cause is gone, a rerun completes the day."""
    resources = {"storage": platform.storage}
    platform.drop("a.csv", V1)
    assert run_landing_zone(instance=platform.instance, resources=resources).failed == []
    assert flagged(platform) == table(platform) == [("M1", 1.0), ("M2", 2.0)]

    original = quality.validate_readings

    def negative_kw(raw, config, day):
        result = original(raw, config, day)
        # A rule broken upstream: a negative reading let through.
        return dataclasses.replace(result, cleansed=result.cleansed.with_columns(pl.col("energy_kw") * -1))

    platform.drop("a.csv", V2)
    defs = build_definitions(resources)
    assert defs.resolve_job_def(ingest_job.name).execute_in_process(instance=platform.instance).success
    with monkeypatch.context() as patch:
        patch.setattr(quality, "validate_readings", negative_kw)
        result = defs.resolve_job_def(daily_job.name).execute_in_process(
            partition_key=MON.isoformat(), instance=platform.instance, raise_on_error=False
        )
    assert not result.success
    failure = result.failure_data_for_node("validate_day")
    assert failure is not None
    assert "failed its blocking check(s) cleansed_schema" in failure.error.message
    checks = {
        (c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()
    }
    assert checks == {
        ("raw_meter_files", "raw_schema"): True,
        ("cleansed_readings", "cleansed_schema"): False,
        ("cleansed_readings", "rows_conserved"): True,
    }
    materialized = sorted(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())
    assert materialized == ["cleansed_readings", "quarantined_readings", "raw_meter_files"]
    # Not retried (the checks would fail again), and nothing downstream ran.
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries == []
    assert result.get_step_success_events() == []
    assert flagged(platform) == table(platform) == [("M1", 1.0), ("M2", 2.0)]
    assert cleansed(platform) == [("M1", -5.0), ("M2", -2.0)]
    # Nor would the instance's run retries take it again.
    run = platform.instance.get_run_by_id(result.run_id)
    assert run.tags["dagster/retry_on_asset_or_op_failure"] == "false"

    rerun = run_landing_zone(instance=platform.instance, resources=resources)
    assert rerun.failed == [] and list(rerun.days) == [MON]
    assert flagged(platform) == table(platform) == [("M1", 5.0), ("M2", 2.0)]


def run_subset(job, platform, assets=(), checks=(), ok=True) -> dg.ExecuteInProcessResult:
    subset = job.get_subset(
        asset_selection={dg.AssetKey(a) for a in assets},
        asset_check_selection={dg.AssetCheckKey(dg.AssetKey(a), name) for a, name in checks},
    )
    result = subset.execute_in_process(
        partition_key=MON.isoformat(), instance=platform.instance, raise_on_error=False
    )
    assert result.success is ok
    return result


def materialized(result: dg.ExecuteInProcessResult) -> list[str]:
    return sorted(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())


def evaluated(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    return {
        (c.asset_key.to_user_string(), c.check_name): c.passed for c in result.get_asset_check_evaluations()
    }


@pytest.mark.parametrize("platform", ["local", "s3"], indirect=True)
def test_each_asset_of_the_step_materializes_alone_from_the_one_before(platform):
    """cleansed and quarantined (together) read the raw rows raw_meter_files last recorded (not the
    files landed since); raw_meter_files alone records the current files; flagged_anomalies alone
    reads the cleansed layer. Only the assets asked for are written."""
    job = day_job_after_a_change(platform, V1, V2)
    validation = ("cleansed_readings", "quarantined_readings")

    # The whole step flagged inline: its one file is both layers, the cleansed readings with their
    # flags. flagged_anomalies alone reads the cleansed columns back and flags them the same way.
    whole_run = lake.read_layer(platform.lake, lake.layer_key("flagged_anomalies", MON))
    both = lake.read_layer(platform.lake, lake.layer_key("cleansed_readings", MON))
    assert both.equals(whole_run)
    assert materialized(run_subset(job, platform, ["flagged_anomalies"])) == ["flagged_anomalies"]
    flagged_alone = lake.read_layer(platform.lake, lake.layer_key("flagged_anomalies", MON))
    assert flagged_alone.sort("meter_id").equals(whole_run.sort("meter_id"))

    # The ledger holds V2 now, but raw_meter_files still records V1.
    result = run_subset(job, platform, validation)
    assert materialized(result) == list(validation)
    assert cleansed(platform) == [("M1", 1.0), ("M2", 2.0)]
    assert quarantined(platform) == []
    assert flagged(platform) == [("M1", 1.0), ("M2", 2.0)]

    assert materialized(run_subset(job, platform, ["raw_meter_files"])) == ["raw_meter_files"]
    manifest = lake.read_json(platform.lake, lake.raw_manifest_key(MON))
    assert manifest["rows"] == 3
    assert cleansed(platform) == [("M1", 1.0), ("M2", 2.0)]

    assert materialized(run_subset(job, platform, validation)) == list(validation)
    assert cleansed(platform) == [("M1", 5.0), ("M2", 2.0)]
    assert quarantined(platform) == [("M3", "invalid_value")]
    assert flagged(platform) == [("M1", 1.0), ("M2", 2.0)]
    stats = lake.read_json(platform.lake, lake.validation_stats_key(MON))
    assert (stats["rows_in"], stats["reasons"]["invalid_value"]) == (3, 1)

    assert materialized(run_subset(job, platform, ["flagged_anomalies"])) == ["flagged_anomalies"]
    assert flagged(platform) == [("M1", 5.0), ("M2", 2.0)]


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_the_two_sides_of_the_validation_are_never_built_apart(platform):
    """Kept and rejected rows come from one validation: cleansed_readings or quarantined_readings
    asked for alone fails at once, saying so, and writes nothing."""
    job = day_job_after_a_change(platform, V1, V2)
    materialize_raw = run_subset(job, platform, ["raw_meter_files"])
    assert materialized(materialize_raw) == ["raw_meter_files"]
    stats = lake.read_json(platform.lake, lake.validation_stats_key(MON))
    for alone in ("cleansed_readings", "quarantined_readings"):
        result = run_subset(job, platform, [alone], ok=False)
        message = result.failure_data_for_node("validate_day").error.message
        assert "two sides of one validation" in message
        assert materialized(result) == []
    assert cleansed(platform) == [("M1", 1.0), ("M2", 2.0)]
    assert quarantined(platform) == []
    assert lake.read_json(platform.lake, lake.validation_stats_key(MON)) == stats


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_a_check_alone_is_evaluated_on_what_its_asset_last_published(platform, monkeypatch):
    """The UI can execute a check by itself: raw_schema then reads the raw rows the manifest pins,
    cleansed_schema the cleansed layer, rows_conserved the last validation's counts and layer."""
    job = day_job_after_a_change(platform, V1, V2)
    checks = [
        ("raw_meter_files", "raw_schema"),
        ("cleansed_readings", "cleansed_schema"),
        ("cleansed_readings", "rows_conserved"),
    ]
    result = run_subset(job, platform, checks=checks)
    assert materialized(result) == []
    assert evaluated(result) == dict.fromkeys(checks, True)
    metadata = {
        (c.asset_key.to_user_string(), c.check_name): c.metadata for c in result.get_asset_check_evaluations()
    }
    # V1, as last published: two raw rows, two kept.
    assert metadata[checks[0]]["rows_checked"].value == 2
    assert metadata[checks[1]]["rows_checked"].value == 2
    assert metadata[checks[2]]["rows_kept"].value == 2

    # A cleansed layer that lost a row since: rows_conserved alone finds it.
    layer = lake.read_layer(platform.lake, lake.layer_key("cleansed_readings", MON))
    with lake.SliceWriter(platform.lake, lake.layer_key("cleansed_readings", MON)) as out:
        out.write(layer.head(1))
    result = run_subset(job, platform, checks=[checks[2]], ok=False)
    assert evaluated(result) == {checks[2]: False}
    conserved = result.get_asset_check_evaluations()[0].metadata
    assert (conserved["rows_kept"].value, conserved["unaccounted"].value) == (1, 1)


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_a_failure_publishing_the_cleansed_layer_leaves_the_flags_as_they_were(platform, monkeypatch):
    """Outputs are published upstream first: when the cleansed layer cannot be published (its
    retries spent), the flagged layer built from it is not published either."""
    job = day_job_after_a_change(platform, V1, V2)
    store_type = type(platform.lake)
    original = store_type.write_file

    def cleansed_fails(self, key, path):
        if key == lake.layer_key("cleansed_readings", MON):
            raise OSError("disk full")
        return original(self, key, path)

    with monkeypatch.context() as patch:
        patch.setattr(store_type, "write_file", cleansed_fails)
        result = job.execute_in_process(
            partition_key=MON.isoformat(), instance=platform.instance, raise_on_error=False
        )
    assert not result.success
    error = result.failure_data_for_node("validate_day").error
    assert "disk full" in error.to_string()
    assert cleansed(platform) == flagged(platform) == table(platform) == [("M1", 1.0), ("M2", 2.0)]
    assert quarantined(platform) == []
    assert job.execute_in_process(partition_key=MON.isoformat(), instance=platform.instance).success
    assert cleansed(platform) == flagged(platform) == table(platform) == [("M1", 5.0), ("M2", 2.0)]
    assert quarantined(platform) == [("M3", "invalid_value")]


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_a_manifest_from_before_batches_were_recorded_says_to_materialize_raw_first(platform):
    job = day_job_after_a_change(platform, V1, V1)
    key = lake.raw_manifest_key(MON)
    manifest = lake.read_json(platform.lake, key)
    old = {**manifest, "files": [{k: v for k, v in f.items() if k != "batch"} for f in manifest["files"]]}
    del old["whole_batches"]
    lake.write_json(platform.lake, key, old)
    result = run_subset(job, platform, ["cleansed_readings", "quarantined_readings"], ok=False)
    message = result.failure_data_for_node("validate_day").error.message
    assert "materialize raw_meter_files first" in message
    assert materialized(
        run_subset(job, platform, ["raw_meter_files", "cleansed_readings", "quarantined_readings"])
    ) == [
        "cleansed_readings",
        "quarantined_readings",
        "raw_meter_files",
    ]


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_cleansed_readings_alone_before_any_raw_rows_says_what_to_materialize(platform):
    resources = {"storage": platform.storage}
    platform.drop("a.csv", V1)
    defs = build_definitions(resources)
    assert defs.resolve_job_def(ingest_job.name).execute_in_process(instance=platform.instance).success
    result = defs.resolve_job_def(daily_job.name).execute_in_process(
        partition_key=MON.isoformat(),
        instance=platform.instance,
        asset_selection=[dg.AssetKey("cleansed_readings"), dg.AssetKey("quarantined_readings")],
        raise_on_error=False,
    )
    assert not result.success
    message = result.failure_data_for_node("validate_day").error.message
    assert "raw_meter_files has not been materialized for 2024-03-04" in message
    assert not platform.lake.exists(lake.layer_key("cleansed_readings", MON))
