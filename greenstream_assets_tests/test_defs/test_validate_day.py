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

    rerun = run_landing_zone(instance=platform.instance, resources=resources)
    assert rerun.failed == [] and list(rerun.days) == [MON]
    assert flagged(platform) == table(platform) == [("M1", 5.0), ("M2", 2.0)]


@pytest.mark.parametrize("platform", ["local", "s3"], indirect=True)
def test_each_asset_of_the_step_materializes_alone_from_the_one_before(platform):
    """cleansed and quarantined alone read the raw rows raw_meter_files last recorded (not the
    files landed since); raw_meter_files alone records the current files; flagged_anomalies alone
    reads the cleansed layer. Only the assets asked for are written."""
    job = day_job_after_a_change(platform, V1, V2)

    def materialize(*assets: str) -> list[str]:
        result = job.execute_in_process(
            partition_key=MON.isoformat(),
            instance=platform.instance,
            asset_selection=[dg.AssetKey(a) for a in assets],
        )
        assert result.success
        return sorted(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())

    # The ledger holds V2 now, but raw_meter_files still records V1.
    assert materialize("cleansed_readings", "quarantined_readings") == [
        "cleansed_readings",
        "quarantined_readings",
    ]
    assert cleansed(platform) == [("M1", 1.0), ("M2", 2.0)]
    assert quarantined(platform) == []
    assert flagged(platform) == [("M1", 1.0), ("M2", 2.0)]

    assert materialize("raw_meter_files") == ["raw_meter_files"]
    manifest = lake.read_json(platform.lake, lake.raw_manifest_key(MON))
    assert manifest["rows"] == 3
    assert cleansed(platform) == [("M1", 1.0), ("M2", 2.0)]

    assert materialize("quarantined_readings") == ["quarantined_readings"]
    assert quarantined(platform) == [("M3", "invalid_value")]
    assert cleansed(platform) == [("M1", 1.0), ("M2", 2.0)]

    assert materialize("cleansed_readings") == ["cleansed_readings"]
    assert cleansed(platform) == [("M1", 5.0), ("M2", 2.0)]
    assert flagged(platform) == [("M1", 1.0), ("M2", 2.0)]

    assert materialize("flagged_anomalies") == ["flagged_anomalies"]
    assert flagged(platform) == [("M1", 5.0), ("M2", 2.0)]


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_cleansed_readings_alone_before_any_raw_rows_says_what_to_materialize(platform):
    resources = {"storage": platform.storage}
    platform.drop("a.csv", V1)
    defs = build_definitions(resources)
    assert defs.resolve_job_def(ingest_job.name).execute_in_process(instance=platform.instance).success
    result = defs.resolve_job_def(daily_job.name).execute_in_process(
        partition_key=MON.isoformat(),
        instance=platform.instance,
        asset_selection=[dg.AssetKey("cleansed_readings")],
        raise_on_error=False,
    )
    assert not result.success
    message = result.failure_data_for_node("validate_day").error.message
    assert "raw_meter_files has not been materialized for 2024-03-04" in message
    assert not platform.lake.exists(lake.layer_key("cleansed_readings", MON))
