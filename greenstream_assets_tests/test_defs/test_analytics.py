"""The outputs people act on, through the whole graph: per-meter report, the faulty-meter registry
across midnight, VEE, features and data-quality history, with exact values."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.jobs import daily_job
from greenstream_assets.defs.resources import RulesResource
from greenstream_assets.rules import vee
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets_tests.conftest import csv

MON, TUE = date(2024, 3, 4), date(2024, 3, 5)


def at(day: date, minutes: int) -> str:
    return (datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minutes)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def series(meter: str, day: date, values: list[float]) -> list[str]:
    return [f"{meter},{at(day, 15 * i)},{v},kW" for i, v in enumerate(values)]


def run(platform):
    summary = run_landing_zone(instance=platform.instance, resources={"storage": platform.storage})
    assert summary.failed == []
    return summary


# M1 goes to zero at 18:00 on Monday (5h45m of zeros that day: not yet faulty) and recovers at
# 02:15 on Tuesday: one 8-hour incident across midnight. M2 draws 2 kW all the time.
MON_FILE = csv(*series("M1", MON, [1.0] * 72 + [0.0] * 24), *series("M2", MON, [2.0] * 96))
TUE_FILE = csv(*series("M1", TUE, [0.0] * 9 + [1.0] * 87), *series("M2", TUE, [2.0] * 96))


@pytest.mark.parametrize("platform", ["local", "postgres"], indirect=True)
def test_reports_registry_vee_features_and_quality(platform):
    platform.drop("mon.csv", MON_FILE)
    platform.drop("tue.csv", TUE_FILE)
    summary = run(platform)
    assert sorted(summary.days) == [MON, TUE]
    assert summary.days[MON]["status"] == "ok"
    assert summary.days[TUE]["status"] == "ok (warn: new_faulty_incidents)"

    incidents = platform.query(
        "SELECT meter_id, start_ts, end_ts, duration_hours, status, readings FROM faulty_meter_incidents"
    ).rows()
    assert incidents == [
        ("M1", datetime(2024, 3, 4, 18, tzinfo=UTC), datetime(2024, 3, 5, 2, tzinfo=UTC), 8.0, "closed", 33)
    ]
    # Re-running Tuesday does not duplicate the incident.
    rerun = run_landing_zone(TUE, instance=platform.instance, resources={"storage": platform.storage})
    assert rerun.failed == []
    assert platform.query("SELECT count(*) FROM faulty_meter_incidents").item() == 1

    report = platform.query(
        "SELECT meter_id, peak_kw, peak_ts, energy_kwh, peak_period_kwh, off_peak_kwh, average_kw, load_factor, "
        "intervals_used FROM meter_daily_peaks WHERE reading_date = ? ORDER BY meter_id",
        [MON],
    ).rows()
    assert report == [
        ("M1", 1.0, datetime(2024, 3, 4, tzinfo=UTC), 18.0, 1.0, 17.0, 0.75, 0.75, 96),
        ("M2", 2.0, datetime(2024, 3, 4, tzinfo=UTC), 48.0, 8.0, 40.0, 2.0, 1.0, 96),
    ]

    completeness = platform.query(
        "SELECT meter_id, expected_intervals, received_intervals, completeness_ratio FROM meter_completeness "
        "WHERE reading_date = ? ORDER BY meter_id",
        [TUE],
    ).rows()
    assert completeness == [("M1", 96, 96, 1.0), ("M2", 96, 96, 1.0)]
    codes = (
        lake.read_parquet(platform.lake, lake.estimated_key(TUE))
        .group_by("quality_code")
        .len()
        .sort("quality_code")
    )
    # Rule 5 across midnight: Tuesday's nine zeros continue Monday's run from 18:00 (8 hours), so
    # they are faulty, and Tuesday lists the meter with the run's start on Monday.
    assert codes.rows() == [("actual", 183), ("faulty", 9)]
    # The codes are an enum while the step works (vee.QUALITY_ENUM) and text in the file.
    assert lake.read_parquet(platform.lake, lake.estimated_key(TUE)).schema == pl.Schema(vee.ESTIMATE_SCHEMA)
    assert platform.query(
        "SELECT reading_date, meter_id, start_ts, end_ts, readings FROM faulty_meters ORDER BY reading_date"
    ).rows() == [(TUE, "M1", datetime(2024, 3, 4, 18, tzinfo=UTC), datetime(2024, 3, 5, 2, tzinfo=UTC), 33)]

    features = lake.read_parquet(platform.lake, lake.features_key(TUE)).filter(pl.col("meter_id") == "M2")
    assert features.height == 24
    assert set(features.get_column("kwh")) == {2.0}
    assert set(features.get_column("prev_day_same_hour_kwh")) == {2.0}
    assert features.get_column("prev_week_same_hour_kwh").null_count() == 24

    quality = platform.query(
        "SELECT reading_date, rows_in, rows_kept, rows_quarantined, anomalies, faulty_meters FROM daily_quality "
        "ORDER BY reading_date"
    ).rows()
    assert quality == [(MON, 192, 192, 0, 0, 0), (TUE, 192, 192, 0, 0, 1)]


INCIDENTS = "SELECT meter_id, start_ts, end_ts, duration_hours, status, readings FROM faulty_meter_incidents"


def from_interval(meter: str, day: date, first: int, values: list[float]) -> list[str]:
    return [f"{meter},{at(day, 15 * (first + i))},{v},kW" for i, v in enumerate(values)]


@pytest.mark.parametrize("platform", ["local", "postgres"], indirect=True)
def test_a_late_file_for_a_day_carries_its_incidents_into_the_next_day(platform):
    # M1 sends nothing from 16:00 to 17:45 on Monday, zeros from 18:00, and recovers at 02:15 on
    # Tuesday. The late file holds Monday's zeros from 16:00: the incident starts two hours earlier.
    # Only Monday is run again, and the registry still holds one incident, closed on Tuesday.
    platform.drop(
        "mon.csv",
        csv(*from_interval("M1", MON, 0, [1.0] * 64), *from_interval("M1", MON, 72, [0.0] * 24)),
    )
    platform.drop("tue.csv", csv(*series("M1", TUE, [0.0] * 9 + [1.0] * 87)))
    run(platform)
    tue_2 = datetime(2024, 3, 5, 2, tzinfo=UTC)
    assert platform.query(INCIDENTS).rows() == [
        ("M1", datetime(2024, 3, 4, 18, tzinfo=UTC), tue_2, 8.0, "closed", 33)
    ]
    platform.drop("late.csv", csv(*from_interval("M1", MON, 64, [0.0] * 8)))
    assert sorted(run(platform).days) == [MON]
    assert platform.query(INCIDENTS).rows() == [
        ("M1", datetime(2024, 3, 4, 16, tzinfo=UTC), tue_2, 10.0, "closed", 41)
    ]
    # Tuesday's own state of the incident was recomputed: no row of it still starts at 18:00.
    assert platform.query(
        "SELECT reading_date, start_ts, status FROM faulty_incident_days ORDER BY reading_date"
    ).rows() == [
        (MON, datetime(2024, 3, 4, 16, tzinfo=UTC), "open"),
        (TUE, datetime(2024, 3, 4, 16, tzinfo=UTC), "closed"),
    ]


@pytest.mark.parametrize("platform", ["local", "postgres"], indirect=True)
def test_a_carry_forward_cut_short_is_finished_by_the_next_run_of_any_day(platform, monkeypatch):
    from greenstream_assets.defs import analytics

    wed = TUE + timedelta(days=1)
    # M1: nothing sent 16:00-17:45 on Monday, zeros from 18:00, all Tuesday, recovered at 02:15 on
    # Wednesday: one incident over three days.
    platform.drop(
        "mon.csv",
        csv(*from_interval("M1", MON, 0, [1.0] * 64), *from_interval("M1", MON, 72, [0.0] * 24)),
    )
    platform.drop("tue.csv", csv(*series("M1", TUE, [0.0] * 96)))
    platform.drop("wed.csv", csv(*series("M1", wed, [0.0] * 9 + [1.0] * 87)))
    run(platform)
    wed_2 = datetime(2024, 3, 6, 2, tzinfo=UTC)
    assert platform.query(INCIDENTS).rows() == [
        ("M1", datetime(2024, 3, 4, 18, tzinfo=UTC), wed_2, 32.0, "closed", 129)
    ]

    # The late file's Monday is published, its chain rewrites Tuesday, and the run dies before
    # Wednesday (a crash, or a write that failed): the marker stays.
    def cut_short(store, warehouse, config, day, state, whole=False):
        lake.write_json(store, lake.incidents_carry_key(day), {"from": day.isoformat()})
        following = day + timedelta(days=1)
        analytics._publish_incidents(
            store, warehouse, following, analytics._incidents_of_day(store, following, config, state)
        )
        return [following]

    monkeypatch.setattr(analytics, "_carry_forward", cut_short)
    platform.drop("late.csv", csv(*from_interval("M1", MON, 64, [0.0] * 8)))
    assert sorted(run(platform).days) == [MON]
    assert platform.query("SELECT count(*) FROM faulty_meter_incidents").item() == 2  # the broken state
    monkeypatch.undo()
    # Any later run of the asset finishes the chain first, to the last day: here Monday again,
    # whose own chain would stop at Tuesday (already rewritten).
    assert (
        run_landing_zone(MON, instance=platform.instance, resources={"storage": platform.storage}).failed
        == []
    )
    assert platform.query(INCIDENTS).rows() == [
        ("M1", datetime(2024, 3, 4, 16, tzinfo=UTC), wed_2, 34.0, "closed", 137)
    ]
    assert list(platform.lake.list(lake.INCIDENTS_CARRY)) == []


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_days_run_newest_first_still_find_the_incident_across_midnight(platform):
    # Zeros from 22:00 on Monday to 04:00 on Tuesday (25 readings, 6 hours), recovered at 04:15.
    platform.drop("mon.csv", csv(*series("M1", MON, [1.0] * 88 + [0.0] * 8)))
    platform.drop("tue.csv", csv(*series("M1", TUE, [0.0] * 17 + [1.0] * 79)))
    resources = {"storage": platform.storage}
    assert run_landing_zone(TUE, instance=platform.instance, resources=resources).failed == []
    # Tuesday alone: two hours of zeros that began before its first reading, no incident yet.
    assert platform.query(INCIDENTS).rows() == []
    assert run_landing_zone(MON, instance=platform.instance, resources=resources).failed == []
    assert platform.query(INCIDENTS).rows() == [
        ("M1", datetime(2024, 3, 4, 22, tzinfo=UTC), datetime(2024, 3, 5, 4, tzinfo=UTC), 6.0, "closed", 25)
    ]
    # Monday's six zeros are no incident on their own; Tuesday, recomputed from Monday's tail,
    # holds it. Running Monday again changes nothing: Tuesday comes out as it was.
    held = [(TUE, datetime(2024, 3, 4, 22, tzinfo=UTC), "closed")]
    days = "SELECT reading_date, start_ts, status FROM faulty_incident_days ORDER BY reading_date"
    assert platform.query(days).rows() == held
    assert run_landing_zone(MON, instance=platform.instance, resources=resources).failed == []
    assert platform.query(days).rows() == held


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_the_drift_check_warns_when_invalid_rows_jump(platform):
    days = [MON + timedelta(days=i) for i in range(4)]
    for day in days[:3]:
        platform.drop(f"{day}.csv", csv(*series("M1", day, [1.0] * 96)))
    # The last day: a firmware update sends a third of the rows in an unknown unit.
    bad = series("M1", days[3], [1.0] * 96)
    bad = [row.replace(",kW", ",kWh") if i % 3 == 0 else row for i, row in enumerate(bad)]
    platform.drop(f"{days[3]}.csv", csv(*bad))
    summary = run(platform)
    assert [summary.days[d]["status"] for d in days] == ["ok", "ok", "ok", "ok (warn: quality_drift)"]
    record = platform.instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("daily_quality"), "quality_drift"),
        limit=1,
    )[0]
    metadata = record.event.dagster_event.asset_check_evaluation_data.metadata
    assert metadata["drifted_rules"].value == "invalid_rate"


def test_the_reports_alone_read_the_grid_estimated_readings_wrote(platform):
    """VEE, the per-meter report and the features are one op; materialized without
    estimated_readings, the two reports read the grid it last wrote (edited here by hand) and the
    grid itself is not written."""
    platform.drop("mon.csv", MON_FILE)
    run(platform)
    key = lake.estimated_key(MON)
    grid = lake.read_parquet(platform.lake, key)
    # M2's grid says 3 kW instead of 2: the reports must follow the grid, not the readings.
    edited = grid.with_columns(
        value_kw=pl.when(pl.col("meter_id") == "M2").then(3.0).otherwise(pl.col("value_kw"))
    )
    lake.write_parquet(platform.lake, key, edited)
    defs = build_definitions({"storage": platform.storage})
    result = defs.resolve_job_def(daily_job.name).execute_in_process(
        partition_key=MON.isoformat(),
        instance=platform.instance,
        asset_selection=[dg.AssetKey("meter_daily_peaks"), dg.AssetKey("hourly_meter_features")],
    )
    assert result.success
    written = sorted(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())
    assert written == ["hourly_meter_features", "meter_daily_peaks"]
    assert lake.read_parquet(platform.lake, key).equals(edited)
    peaks = platform.query("SELECT meter_id, peak_kw, energy_kwh FROM meter_daily_peaks ORDER BY meter_id")
    assert peaks.rows() == [("M1", 1.0, 18.0), ("M2", 3.0, 72.0)]
    hourly = lake.read_parquet(platform.lake, lake.features_key(MON))
    m2 = hourly.filter(pl.col("meter_id") == "M2").get_column("kwh").unique().to_list()
    assert m2 == [3.0]


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_the_run_config_overrides_the_report_and_feature_settings(platform):
    """top_n_meters, holidays and short_gap_minutes set in a run's config (the launchpad) reach
    the rules; a setting no rule can work with fails the step with what is wrong."""
    # M1 misses 08:00-09:15 (six intervals, 1h30): more than the default one-hour short gap.
    gap = [None if 32 <= i < 38 else 1.0 for i in range(96)]
    rows = series("M1", MON, gap) + series("M2", MON, [2.0] * 96) + series("M3", MON, [3.0] * 96)
    platform.drop("mon.csv", csv(*rows).replace(",None,", ",,"))
    run(platform)
    codes = lake.read_parquet(platform.lake, lake.estimated_key(MON)).group_by("quality_code").len()
    assert dict(codes.rows()) == {"actual": 282, "missing": 6}

    defs = build_definitions({"storage": platform.storage})
    settings = {"top_n_meters": 2, "holidays": [MON.isoformat()], "short_gap_minutes": 90}
    result = defs.resolve_job_def(daily_job.name).execute_in_process(
        partition_key=MON.isoformat(),
        instance=platform.instance,
        run_config={"resources": {"rules": {"config": settings}}},
        asset_selection=[
            dg.AssetKey(k) for k in ("estimated_readings", "meter_daily_peaks", "hourly_meter_features")
        ],
    )
    assert result.success
    peaks = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("meter_daily_peaks")
    )
    assert "top_20_meters" not in peaks
    assert "| M3 | 3.0 |" in peaks["top_2_meters"].value and "| M1 |" not in peaks["top_2_meters"].value
    features = lake.read_parquet(platform.lake, lake.features_key(MON))
    assert features.height == 72 and features.get_column("is_holiday").all()
    codes = lake.read_parquet(platform.lake, lake.estimated_key(MON)).group_by("quality_code").len()
    assert dict(codes.rows()) == {"actual": 282, "estimated_linear": 6}

    bad = {"interval_minutes": 7, "holidays": ["25/12/2024"]}
    failed = defs.resolve_job_def(daily_job.name).execute_in_process(
        partition_key=MON.isoformat(),
        instance=platform.instance,
        run_config={"resources": {"rules": {"config": bad}}},
        asset_selection=[dg.AssetKey("estimated_readings")],
        raise_on_error=False,
    )
    assert not failed.success
    failure = next(e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "interval_minutes must divide a day (1440 minutes), got 7" in message
    assert "holidays: '25/12/2024' is not a date (YYYY-MM-DD)" in message


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_west_of_utc_a_partition_reports_the_local_day_that_ended_in_it(platform):
    """In America/New_York (UTC-5 in March) the local day D ends at 05:00 UTC on D+1, in the next
    partition: partition D reports the local day before it, whole. One meter sends every interval
    of three UTC days."""
    days = [MON, TUE, TUE + timedelta(days=1)]
    platform.drop("week.csv", csv(*(row for d in days for row in series("M1", d, [1.0] * 96))))
    rules = RulesResource(timezone="America/New_York")
    summary = run_landing_zone(
        instance=platform.instance, resources={"storage": platform.storage, "rules": rules}
    )
    assert summary.failed == []
    completeness = platform.query(
        "SELECT reading_date, expected_intervals, received_intervals FROM meter_completeness ORDER BY reading_date"
    ).rows()
    # MON reports Sunday (local), of which only 00:00-05:00 UTC on MON arrived: 20 intervals.
    assert completeness == [(MON, 96, 20), (TUE, 96, 96), (days[2], 96, 96)]
    energy = platform.query(
        "SELECT reading_date, energy_kwh, intervals_used FROM meter_daily_peaks ORDER BY reading_date"
    ).rows()
    assert energy == [(MON, 5.0, 20), (TUE, 24.0, 96), (days[2], 24.0, 96)]
    grid = lake.read_parquet(platform.lake, lake.estimated_key(TUE))
    # TUE's grid is Monday 00:00-24:00 in New York: 05:00 UTC on MON to 05:00 UTC on TUE.
    assert grid.select(first=pl.col("reading_ts").min(), last=pl.col("reading_ts").max()).row(0) == (
        datetime(2024, 3, 4, 5, tzinfo=UTC),
        datetime(2024, 3, 5, 4, 45, tzinfo=UTC),
    )
    assert grid.get_column("quality_code").unique().to_list() == ["actual"]
    features = lake.read_parquet(platform.lake, lake.features_key(TUE))
    assert features.get_column("local_date").unique().to_list() == [MON]
    assert features.height == 24


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_the_reports_made_on_the_way_match_those_made_alone(platform):
    """daily_peaks and faulty_meter_incidents are made from the slices load_meter_readings loads,
    daily_quality from the counts estimate_and_report makes: materialized alone, each reads what it
    is made from (the archive, the flagged layer, the grid) and comes out the same; daily_peaks
    alone follows the archive as published (edited here by hand)."""
    platform.drop("mon.csv", MON_FILE)
    platform.drop("tue.csv", TUE_FILE)
    run(platform)
    reports = {
        "daily_peaks": "SELECT * FROM daily_peaks ORDER BY reading_date",
        "faulty_meters": "SELECT * FROM faulty_meters ORDER BY reading_date, meter_id",
        "faulty_meter_incidents": "SELECT * FROM faulty_incident_days ORDER BY reading_date, meter_id",
        "daily_quality": "SELECT * FROM daily_quality ORDER BY reading_date",
    }
    made = {name: platform.query(sql).rows() for name, sql in reports.items()}
    assert made["daily_peaks"] == [
        (MON, datetime(2024, 3, 4, tzinfo=UTC), 3.0, 2),
        (TUE, datetime(2024, 3, 5, 2, 15, tzinfo=UTC), 3.0, 2),
    ]
    defs = build_definitions({"storage": platform.storage})
    job = defs.resolve_job_def(daily_job.name)
    result = job.execute_in_process(
        partition_key=TUE.isoformat(),
        instance=platform.instance,
        asset_selection=[dg.AssetKey(name) for name in reports],
    )
    assert result.success
    written = sorted(e.asset_key.to_user_string() for e in result.get_asset_materialization_events())
    assert written == sorted(reports)
    checks = sorted(c.check_name for c in result.get_asset_check_evaluations())
    assert checks == ["new_faulty_incidents", "quality_drift"]
    assert {name: platform.query(sql).rows() for name, sql in reports.items()} == made

    # The archive says M2 drew 5 kW at 12:00 on Tuesday: daily_peaks alone follows it.
    key = lake.archive_key(TUE)
    archived = lake.read_parquet(platform.lake, key)
    noon = datetime(2024, 3, 5, 12, tzinfo=UTC)
    edited = archived.with_columns(
        energy_kw=pl.when((pl.col("meter_id") == "M2") & (pl.col("reading_ts") == noon))
        .then(5.0)
        .otherwise(pl.col("energy_kw"))
    )
    lake.write_parquet(platform.lake, key, edited)
    result = job.execute_in_process(
        partition_key=TUE.isoformat(),
        instance=platform.instance,
        asset_selection=[dg.AssetKey("daily_peaks")],
    )
    assert result.success
    assert platform.query("SELECT * FROM daily_peaks WHERE reading_date = ?", [TUE]).rows() == [
        (TUE, noon, 6.0, 2)
    ]


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_incidents_made_on_the_way_are_taken_only_while_what_they_were_made_from_stands(platform):
    """The load step works a day's incidents out while it loads, before the day has its turn: they
    are taken only if every slice was added and the previous day's archive and open incidents are
    still those they were made from."""
    from greenstream_assets.defs.analytics import DayIncidents, read_previous_open
    from greenstream_assets.rules.config import RulesConfig

    platform.drop("mon.csv", MON_FILE)
    platform.drop("tue.csv", TUE_FILE)
    run(platform)
    config, store = RulesConfig(), platform.lake

    def made() -> DayIncidents:
        found = DayIncidents(store, TUE, config, read_previous_open(store, TUE))
        with lake.read_slices(store, lake.layer_key("flagged_anomalies", TUE)) as slices:
            for part in slices:
                found.add(part)
        return found

    stored = lake.read_parquet(store, lake.layer_key("faulty_incidents", TUE))
    found = made()
    assert found.made_from(store, TUE, read_previous_open(store, TUE))
    assert found.result().equals(stored)
    assert found.result().select("meter_id", "status", "readings").rows() == [("M1", "closed", 33)]
    # Monday's open incidents changed since (another run's carry-forward): not taken.
    assert not found.made_from(store, TUE, None)
    # Monday's archive was published again since: not taken.
    lake.write_parquet(store, lake.archive_key(MON), lake.read_parquet(store, lake.archive_key(MON)))
    assert not found.made_from(store, TUE, read_previous_open(store, TUE))
    assert made().made_from(store, TUE, read_previous_open(store, TUE))
    # A slice that failed: not taken, and its error is raised by the result.
    broken = made()
    broken.add(pl.DataFrame({"meter_id": ["M9"]}))
    assert not broken.made_from(store, TUE, read_previous_open(store, TUE))
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        broken.result()


@pytest.mark.parametrize("broken", ["incidents_set_up", "incidents_slice", "peak_totals"])
def test_a_report_that_fails_on_the_way_is_made_after_the_load_from_what_it_reads(
    platform, monkeypatch, broken
):
    """What load_meter_readings works out for its reports as it loads cannot stop the table or
    the archive: the report is then made from what it reads, after them, as alone."""
    import threading

    from greenstream_assets.defs import analytics
    from greenstream_assets.rules import reports as report_rules

    calls = []
    set_up, add = analytics.DayIncidents.__init__, analytics.DayIncidents._add

    def set_up_on_the_way_fails(self, *args):
        calls.append(1)
        if len(calls) % 2:  # the day's first (in the load), not the one made after it
            raise RuntimeError("unreadable yesterday")
        set_up(self, *args)

    def slice_on_the_way_fails(self, readings):
        if threading.current_thread().name.startswith("incidents"):
            raise RuntimeError("a slice's incidents")
        add(self, readings)

    def totals_fail(readings):
        raise RuntimeError("a slice's totals")

    patches = {
        "incidents_set_up": (analytics.DayIncidents, "__init__", set_up_on_the_way_fails),
        "incidents_slice": (analytics.DayIncidents, "_add", slice_on_the_way_fails),
        "peak_totals": (report_rules, "instant_totals", totals_fail),
    }
    monkeypatch.setattr(*patches[broken])
    platform.drop("mon.csv", MON_FILE)
    platform.drop("tue.csv", TUE_FILE)
    run(platform)
    assert platform.query(INCIDENTS).rows() == [
        ("M1", datetime(2024, 3, 4, 18, tzinfo=UTC), datetime(2024, 3, 5, 2, tzinfo=UTC), 8.0, "closed", 33)
    ]
    assert platform.query("SELECT * FROM daily_peaks ORDER BY reading_date").rows() == [
        (MON, datetime(2024, 3, 4, tzinfo=UTC), 3.0, 2),
        (TUE, datetime(2024, 3, 5, 2, 15, tzinfo=UTC), 3.0, 2),
    ]
    assert platform.query("SELECT count(*) FROM meter_readings").item() == 384
    if broken == "incidents_set_up":
        assert len(calls) == 4
