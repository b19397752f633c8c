"""A day processed a slice of meters at a time ends exactly as the same day processed whole: every
table, the quarantine, the archive, the estimates, the features and the incident registry."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.generate import Defects, write_day
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import LocalBlobStore
from greenstream_assets_tests.conftest import csv

MON, TUE = date(2024, 3, 4), date(2024, 3, 5)
TABLES = {
    "meter_readings": ("meter_id", "reading_ts"),
    "daily_peaks": ("reading_date",),
    "faulty_meters": ("meter_id", "start_ts"),
    "meter_daily_peaks": ("meter_id", "reading_date"),
    "meter_completeness": ("meter_id", "reading_date"),
    "faulty_incident_days": ("meter_id", "start_ts", "reading_date"),
    "daily_quality": ("reading_date",),
}


def at(day: date, minutes: int) -> str:
    return (datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minutes)).isoformat()


def land(root):
    store = LocalBlobStore(root)
    defects = Defects(duplicates=0.02, stuck_meters=0.1, nulls=0.03, broken_files=0)
    write_day(store, 30, MON, 15, "batch", defects, seed=3)
    write_day(store, 30, TUE, 15, "batch", defects, seed=4)
    # SILENT is stuck at zero from 17:00 on Monday to midnight and sends nothing on Tuesday: its
    # incident stays open on Tuesday although no slice of Tuesday's readings holds the meter.
    rows = [f"SILENT,{at(MON, 15 * i)},{0.0 if i >= 68 else 1.5},kW" for i in range(96)]
    # The same reading sent twice from two files, with spaces around the meter id in one.
    rows += [f" M-X ,{at(MON, 0)},1.0,kW"]
    store.write("extra/silent.csv", csv(*rows).encode())
    store.write("extra/again.csv", csv(f"M-X,{at(MON, 0)},1.0,kW", f"M-X,{at(MON, 15)},2.0,kW").encode())


def run_with(tmp_path, name: str, slice_rows: int) -> StorageResource:
    land(tmp_path / name / "landing")
    storage = StorageResource(
        landing=str(tmp_path / name / "landing"),
        lake=str(tmp_path / name / "lake"),
        warehouse=str(tmp_path / name / "warehouse.duckdb"),
        slice_rows=slice_rows,
    )
    with dg.instance_for_test() as instance:
        summary = run_landing_zone(instance=instance, resources={"storage": storage})
    assert summary.failed == []
    assert sorted(summary.days) == [MON, TUE]
    return storage


def sorted_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_a_day_in_slices_ends_as_the_day_whole(tmp_path):
    whole = run_with(tmp_path, "whole", slice_rows=10**9)
    sliced = run_with(tmp_path, "sliced", slice_rows=50)

    for table, key in TABLES.items():
        expected = whole.open_warehouse().query(f"SELECT * FROM {table}").sort(key)
        got = sliced.open_warehouse().query(f"SELECT * FROM {table}").sort(key)
        assert got.equals(expected), table
    incidents = sliced.open_warehouse().query(
        "SELECT status, start_ts FROM faulty_incident_days WHERE meter_id = 'SILENT' AND reading_date = ?",
        [TUE],
    )
    assert incidents.rows() == [("open", datetime(2024, 3, 4, 17, tzinfo=UTC))]
    # Nothing lost in slicing: every landed row is kept, quarantined or collapsed.
    stats = [lake.read_json(sliced.lake_store(), lake.validation_stats_key(day)) for day in (MON, TUE)]
    kept = sliced.open_warehouse().query("SELECT count(*) FROM meter_readings").item()
    quarantined = sum(sum(day["reasons"].values()) for day in stats)
    collapsed = sum(day["rows_collapsed"] for day in stats)
    landed = sum(p.read_bytes().count(b"\n") - 1 for p in (tmp_path / "sliced" / "landing").rglob("*.csv"))
    assert kept + quarantined + collapsed == sum(day["rows_in"] for day in stats) == landed

    whole_lake, sliced_lake = whole.lake_store(), sliced.lake_store()
    for day in (MON, TUE):
        for key in (
            lake.archive_key(day),
            lake.estimated_key(day),
            lake.features_key(day),
            lake.layer_key("faulty_periods", day),
        ):
            expected = sorted_frame(lake.read_parquet(whole_lake, key))
            got = sorted_frame(lake.read_parquet(sliced_lake, key))
            assert got.equals(expected), key
        expected = sorted_frame(lake.read_jsonl(whole_lake, lake.quarantine_key(day)))
        got = sorted_frame(lake.read_jsonl(sliced_lake, lake.quarantine_key(day)))
        assert got.height > 0 and got.equals(expected)
        assert lake.read_json(sliced_lake, lake.validation_stats_key(day)) == lake.read_json(
            whole_lake, lake.validation_stats_key(day)
        )
        # The hand-over layers between steps (Arrow) hold the same rows too.
        for layer in ("cleansed_readings", "flagged_anomalies"):
            key = lake.layer_key(layer, day)
            expected = sorted_frame(lake.read_layer(whole_lake, key))
            got = sorted_frame(lake.read_layer(sliced_lake, key))
            assert got.height > 0 and got.equals(expected), key
    # Monday really was cut in slices (one record batch each), the other in one.
    assert lake.layer_slices(sliced_lake, lake.layer_key("cleansed_readings", MON)) > 10
    assert lake.layer_slices(whole_lake, lake.layer_key("cleansed_readings", MON)) == 1
