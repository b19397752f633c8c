"""The code location loads, and its lineage reads as the platform is described."""

import dataclasses
import os
import subprocess
import sys
from datetime import date

import dagster as dg
import pytest

from greenstream_assets import code_location
from greenstream_assets.defs.analytics import NEW_FAULTY_INCIDENTS, QUALITY_DRIFT
from greenstream_assets.defs.checks import (
    ARCHIVE_MATCHES_TABLE,
    CLEANSED_SCHEMA,
    RAW_SCHEMA,
    ROWS_CONSERVED,
    TABLE_SCHEMA,
)
from greenstream_assets.defs.operations import YESTERDAY_LANDED
from greenstream_assets.defs.partitions import daily_partitions
from greenstream_assets.defs.resources import RulesResource
from greenstream_assets.rules.config import RulesConfig


def _graph():
    return code_location.get_repository_def().asset_graph


def test_definitions_load_and_validate():
    dg.Definitions.validate_loadable(code_location)
    assert {j.name for j in code_location.get_repository_def().get_all_jobs()} >= {
        "ingest_landing_job",
        "daily_readings_job",
    }
    assert [s.name for s in code_location.sensors] == ["landing_zone_sensor", "run_failure_alerts"]
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in code_location.sensors)
    assert [s.name for s in code_location.schedules] == ["freshness_check_schedule"]


def test_lineage_edges():
    graph = _graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    assert parents("raw_meter_files") == {"landing_files"}
    assert parents("cleansed_readings") == {"raw_meter_files"}
    assert parents("quarantined_readings") == {"raw_meter_files"}
    assert parents("flagged_anomalies") == {"cleansed_readings"}
    assert parents("meter_readings") == {"flagged_anomalies"}
    assert parents("meter_readings_archive") == {"flagged_anomalies"}
    assert parents("daily_peaks") == {"meter_readings", "meter_readings_archive"}
    assert parents("faulty_meters") == {"flagged_anomalies", "meter_readings"}
    assert parents("estimated_readings") == {"flagged_anomalies", "meter_readings_archive"}
    assert parents("meter_daily_peaks") == {"estimated_readings"}
    assert parents("faulty_meter_incidents") == {"flagged_anomalies", "meter_readings_archive"}
    assert parents("hourly_meter_features") == {"estimated_readings"}
    assert parents("daily_quality") == {
        "cleansed_readings",
        "quarantined_readings",
        "flagged_anomalies",
        "estimated_readings",
    }


def test_every_asset_is_described_grouped_and_daily():
    graph = _graph()
    groups = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and len(node.description) > 40, key
        assert node.kinds, key
        groups[key.to_user_string()] = node.group_name
        if key.to_user_string() != "landing_files":
            assert node.partitions_def == daily_partitions, key
    assert groups == {
        "landing_files": "ingestion",
        "raw_meter_files": "ingestion",
        "cleansed_readings": "quality",
        "quarantined_readings": "quality",
        "flagged_anomalies": "quality",
        "meter_readings": "warehouse",
        "meter_readings_archive": "warehouse",
        "daily_peaks": "reports",
        "faulty_meters": "reports",
        "estimated_readings": "quality",
        "meter_daily_peaks": "reports",
        "faulty_meter_incidents": "reports",
        "hourly_meter_features": "reports",
        "daily_quality": "reports",
    }


def test_checks_and_which_block():
    graph = _graph()
    checks = {(k.asset_key.to_user_string(), k.name): graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert set(checks) == {
        ("raw_meter_files", RAW_SCHEMA),
        ("cleansed_readings", CLEANSED_SCHEMA),
        ("cleansed_readings", ROWS_CONSERVED),
        ("meter_readings", TABLE_SCHEMA),
        ("meter_readings_archive", ARCHIVE_MATCHES_TABLE),
        ("faulty_meter_incidents", NEW_FAULTY_INCIDENTS),
        ("daily_quality", QUALITY_DRIFT),
        ("landing_files", YESTERDAY_LANDED),
    }
    blocking = {key for key, spec in checks.items() if spec.blocking}
    assert blocking == {("cleansed_readings", CLEANSED_SCHEMA), ("cleansed_readings", ROWS_CONSERVED)}
    assert all(spec.description for spec in checks.values())


def test_kinds_follow_the_configured_storage(monkeypatch):
    from greenstream_assets.definitions import build_definitions

    def kinds(name):
        return build_definitions().get_repository_def().asset_graph.get(dg.AssetKey(name)).kinds

    # Every asset that writes a warehouse table says which warehouse.
    writes_tables = [
        "meter_readings",
        "daily_peaks",
        "faulty_meters",
        "estimated_readings",
        "meter_daily_peaks",
        "faulty_meter_incidents",
        "daily_quality",
    ]
    assert kinds("meter_readings") == {"duckdb", "table"}
    assert kinds("meter_readings_archive") == {"parquet"}
    assert kinds("estimated_readings") == {"polars", "parquet", "duckdb"}
    assert kinds("faulty_meter_incidents") == {"polars", "duckdb", "table"}
    assert all("duckdb" in kinds(name) for name in writes_tables)
    monkeypatch.setenv("GREENSTREAM_WAREHOUSE", "postgresql://gs@db/meters")
    monkeypatch.setenv("GREENSTREAM_LAKE", "s3://lake/prefix")
    assert kinds("meter_readings") == {"postgres", "table"}
    assert kinds("meter_readings_archive") == {"parquet", "s3"}
    assert kinds("quarantined_readings") == {"json", "s3"}
    assert kinds("estimated_readings") == {"polars", "parquet", "postgres", "s3"}
    assert all("postgres" in kinds(name) and "duckdb" not in kinds(name) for name in writes_tables)


ALLOCATOR_PROBE = """
import os
import sys
import greenstream_assets
assert "polars" not in sys.modules
before = os.environ.get("_RJEM_MALLOC_CONF")
import polars
# Polars puts its own defaults first and what it found in the environment last (last wins).
print(before, os.environ["_RJEM_MALLOC_CONF"].endswith("," + before))
"""


@pytest.mark.parametrize(
    ("operator_setting", "expected"),
    [(None, "dirty_decay_ms:10000,muzzy_decay_ms:10000"), ("dirty_decay_ms:0", "dirty_decay_ms:0")],
    ids=["default", "operator's own"],
)
def test_the_package_sets_polars_allocator_before_polars_loads(operator_setting, expected):
    """The setting is read by polars' allocator when polars loads, so importing the package (which
    a code location or run worker does first) must set it; an operator's own value is kept."""
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if operator_setting is not None:
        env["_RJEM_MALLOC_CONF"] = operator_setting
    probe = subprocess.run(
        [sys.executable, "-c", ALLOCATOR_PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert probe.stdout.split() == [expected, "True"]


HUGE_PAGES_PROBE = """
import ctypes
import subprocess
import sys
PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42
ctypes.CDLL(None).prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0)  # as the system has it, not as pytest's
import greenstream_assets
child = "import ctypes; print(ctypes.CDLL(None).prctl(42, 0, 0, 0, 0))"
# This process, and a process it starts (a step's subprocess, a run worker), inherit the setting.
print(ctypes.CDLL(None).prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), subprocess.run(
    [sys.executable, "-c", child], capture_output=True, text=True, check=True).stdout.strip())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
@pytest.mark.parametrize(("keep", "expected"), [(None, ["1", "1"]), ("1", ["0", "0"])], ids=["off", "kept"])
def test_importing_the_package_turns_transparent_huge_pages_off_unless_told_to_keep_them(keep, expected):
    env = {k: v for k, v in os.environ.items() if k != "GREENSTREAM_KEEP_HUGE_PAGES"}
    if keep is not None:
        env["GREENSTREAM_KEEP_HUGE_PAGES"] = keep
    probe = subprocess.run(
        [sys.executable, "-c", HUGE_PAGES_PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert probe.stdout.split() == expected


FREEZE_PROBE = """
import gc
import sys
import greenstream_assets.defs.resources  # Dagster and polars, as a run worker has them first
if sys.argv[1] == "disabled":
    gc.disable()
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and full.append(1))
before = gc.get_freeze_count()
import greenstream_assets.definitions
print(before, gc.get_freeze_count() > 100_000, len(full), gc.isenabled())
"""


@pytest.mark.parametrize("collector", ["enabled", "disabled"])
def test_loading_the_code_location_freezes_what_it_loaded(collector):
    """What the code location loads lives as long as the process: no full collection while it
    loads (pandera and pandas alone set one off), then it is moved out of the garbage collector's
    full collections (which would otherwise scan it all in a run's steps). The collector is left
    as it was found."""
    probe = subprocess.run(
        [sys.executable, "-c", FREEZE_PROBE, collector],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.split() == ["0", "True", "0", str(collector == "enabled")]


def test_the_rules_resource_sets_every_setting_of_the_rule_book():
    """A run's config (the launchpad) can set any threshold: every RulesConfig field is a resource
    field, with the same default, and reaches the config."""
    assert set(RulesResource.model_fields) == {f.name for f in dataclasses.fields(RulesConfig)}
    assert RulesResource().config() == RulesConfig()
    config = RulesResource(
        unit_factors={"W": 0.001, "kW": 1.0, "MW": 1000.0},
        interval_minutes=30,
        top_n_meters=5,
        short_gap_minutes=90,
        history_weeks=2,
        holidays=["2024-12-26", "2024-12-25"],
        drift_factor=2.5,
        drift_window_days=7,
        min_drift_rate=0.01,
    ).config()
    assert config == RulesConfig(
        unit_factors={"W": 0.001, "kW": 1.0, "MW": 1000.0},
        interval_minutes=30,
        top_n_meters=5,
        short_gap_minutes=90,
        history_weeks=2,
        holidays=(date(2024, 12, 25), date(2024, 12, 26)),
        drift_factor=2.5,
        drift_window_days=7,
        min_drift_rate=0.01,
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"interval_minutes": 0}, "interval_minutes must divide a day (1440 minutes), got 0"),
        ({"interval_minutes": 7}, "interval_minutes must divide a day (1440 minutes), got 7"),
        ({"unit_factors": {"W": 0.0}}, "unit_factors must map each unit to a factor above 0"),
        ({"unit_factors": {}}, "unit_factors must map each unit to a factor above 0"),
        ({"top_n_meters": 0}, "top_n_meters must be at least 1, got 0"),
        ({"history_weeks": -1}, "history_weeks must not be negative, got -1"),
        ({"drift_factor": 0.0}, "drift_factor must be above 0, got 0.0"),
        ({"holidays": ["2024-02-30"]}, "holidays: '2024-02-30' is not a date (YYYY-MM-DD)"),
    ],
)
def test_a_rules_setting_no_rule_can_work_with_is_refused(settings, message):
    with pytest.raises(dg.Failure, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        RulesResource(**settings).config()
    assert err.value.allow_retries is False
