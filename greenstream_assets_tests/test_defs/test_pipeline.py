"""Whole days through the whole graph, on the embedded default (folder + DuckDB), with exact values."""

from datetime import UTC, date, datetime

import dagster as dg
import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets_tests.conftest import csv

MON = date(2024, 3, 4)
TUE = date(2024, 3, 5)

FILE_A = csv(
    "M1,2024-03-04T17:00:00Z,1500,W",
    "M2,2024-03-04 17:00:00,2.5,kW",
    "M1,2024-03-04T18:15:00+01:00,1.0,kW",
    "M2,2024-03-04T17:15:00Z,,kW",
    "M3,2024-03-04T17:00:00Z,150,kW",
    "M2,2024-03-04T17:00:00Z,2.5,kW",
    "M4,2024-03-04T17:00:00Z,-1,kW",
    "M4,2024-03-04T17:15:00Z,1,kWh",
    "M5,not-a-time,1,kW",
    "M1,2024-03-05T00:30:00Z,2.0,kW",
)
# M6 sits at zero for exactly six hours (faulty); M7 for five (not faulty).
FILE_B = csv(
    *(f"M6,2024-03-04T{h:02d}:00:00Z,0.0,kW" for h in range(7)),
    *(f"M7,2024-03-04T{h:02d}:00:00Z,0,W" for h in range(6)),
    header="energy_unit_note,energy_unit,energy_value,timestamp,meter_id".replace(
        "energy_unit_note,energy_unit,energy_value,timestamp,meter_id",
        "meter_id,timestamp,energy_value,energy_unit",
    ),
)


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def table(platform, day):
    return platform.query(
        "SELECT meter_id, reading_ts, energy_kw, is_missing, is_anomaly, is_faulty, is_peak_period "
        "FROM meter_readings WHERE reading_date = ? ORDER BY meter_id, reading_ts",
        [day],
    )


def run(platform, day=None):
    summary = run_landing_zone(day, instance=platform.instance, resources={"storage": platform.storage})
    assert summary.failed == []
    return summary


def test_a_day_through_the_whole_graph(platform):
    platform.drop("2024-03-04/a.csv", FILE_A)
    platform.drop("2024-03-04/b.csv", FILE_B)
    summary = run(platform)

    assert sorted(summary.days) == [MON, TUE]
    assert summary.ingest == {"files_staged": 2, "files_failed": 0, "rows_staged": 23}
    mon = summary.days[MON]
    assert (mon["kept"], mon["quarantined"], mon["collapsed"], mon["anomalies"]) == (18, 3, 1, 1)
    assert (mon["faulty_meters"], mon["peak_kw"], mon["peak_ts"]) == (1, 4.0, "2024-03-04T17:00:00+00:00")

    rows = table(platform, MON)
    head = rows.filter(pl.col("meter_id").is_in(["M1", "M2", "M3"]))
    assert head.rows() == [
        ("M1", ts("2024-03-04T17:00:00"), 1.5, False, False, False, True),
        ("M1", ts("2024-03-04T17:15:00"), 1.0, False, False, False, True),
        ("M2", ts("2024-03-04T17:00:00"), 2.5, False, False, False, True),
        ("M2", ts("2024-03-04T17:15:00"), None, True, False, False, True),
        ("M3", ts("2024-03-04T17:00:00"), 150.0, False, True, False, True),
    ]
    zeros = rows.filter(pl.col("meter_id").is_in(["M6", "M7"]))
    assert zeros.group_by("meter_id").agg(pl.col("is_faulty").sum()).sort("meter_id").rows() == [
        ("M6", 7),
        ("M7", 0),
    ]
    assert table(platform, TUE).rows() == [("M1", ts("2024-03-05T00:30:00"), 2.0, False, False, False, False)]

    assert platform.query("SELECT * FROM daily_peaks ORDER BY reading_date").rows() == [
        (MON, ts("2024-03-04T17:00:00"), 4.0, 2),
        (TUE, ts("2024-03-05T00:30:00"), 2.0, 1),
    ]
    assert platform.query("SELECT meter_id, start_ts, end_ts, readings FROM faulty_meters").rows() == [
        ("M6", ts("2024-03-04T00:00:00"), ts("2024-03-04T06:00:00"), 7)
    ]

    quarantined = lake.read_jsonl(platform.lake, lake.quarantine_key(MON)).sort("line_number")
    assert quarantined.rows() == [
        ("M4", "2024-03-04T17:00:00Z", "-1", "kW", "negative_value", "2024-03-04/a.csv", 8),
        ("M4", "2024-03-04T17:15:00Z", "1", "kWh", "invalid_unit", "2024-03-04/a.csv", 9),
        ("M5", "not-a-time", "1", "kW", "invalid_timestamp", "2024-03-04/a.csv", 10),
    ]
    assert quarantined.columns == [
        "meter_id",
        "timestamp",
        "energy_value",
        "energy_unit",
        "reason",
        "source_file",
        "line_number",
    ]

    # The archive is the table's rows, readable as one hive-partitioned table.
    archive = platform.scan_archive().group_by("date").len().sort("date").collect()
    assert [(str(d), n) for d, n in archive.rows()] == [("2024-03-04", 18), ("2024-03-05", 1)]

    # The originals are backed up byte for byte, and each day keeps a manifest.
    manifest = lake.read_json(platform.lake, lake.raw_manifest_key(MON))
    assert [(f["key"], f["rows"]) for f in manifest["files"]] == [
        ("2024-03-04/a.csv", 9),
        ("2024-03-04/b.csv", 13),
    ]
    for entry in manifest["files"]:
        # Every file is backed up alone, untouched, under a name of its own in raw/.
        assert entry["backup"] == lake.raw_backup_key(entry["checksum"], entry["key"])
        backup = platform.lake.read(entry["backup"])
        assert backup == platform.landing.read(entry["key"])
        assert lake.read_raw_backup(platform.lake, entry["checksum"], entry["key"], entry["batch"]) == backup
        assert entry["size"] == len(backup)

    # Every check of both days passed, recorded on the instance.
    for check in ("raw_schema", "cleansed_schema", "rows_conserved", "table_schema", "archive_matches_table"):
        records = platform.instance.event_log_storage.get_asset_check_execution_history(
            _check_key(check), limit=10
        )
        assert sorted(r.partition for r in records) == ["2024-03-04", "2024-03-05"], check
        assert all(r.status.value == "SUCCEEDED" for r in records), check


def _check_key(name):
    import dagster as dg

    asset = {
        "raw_schema": "raw_meter_files",
        "cleansed_schema": "cleansed_readings",
        "rows_conserved": "cleansed_readings",
        "table_schema": "meter_readings",
        "archive_matches_table": "meter_readings_archive",
    }[name]
    return dg.AssetCheckKey(dg.AssetKey(asset), name)


def test_rerunning_a_day_changes_nothing(platform):
    platform.drop("2024-03-04/a.csv", FILE_A)
    run(platform)
    before = (
        table(platform, MON),
        platform.query("SELECT * FROM daily_peaks ORDER BY reading_date"),
        platform.lake.read(lake.quarantine_key(MON)),
        platform.lake.read(lake.archive_key(MON)),
    )
    again = run(platform, MON)
    assert list(again.days) == [MON]
    after = (
        table(platform, MON),
        platform.query("SELECT * FROM daily_peaks ORDER BY reading_date"),
        platform.lake.read(lake.quarantine_key(MON)),
        platform.lake.read(lake.archive_key(MON)),
    )
    assert before[0].equals(after[0]) and before[1].equals(after[1])
    assert before[2] == after[2]
    assert pl.read_parquet(before[3]).equals(pl.read_parquet(after[3]))
    # Nothing new in the landing zone: no day is stale, so a plain run does nothing.
    assert run(platform).days == {}


def test_a_resent_file_replaces_its_rows_on_every_day_it_touched(platform):
    platform.drop("2024-03-04/a.csv", FILE_A)
    run(platform)
    # The meter re-sends the file: one value corrected, the next-day row gone.
    platform.drop(
        "2024-03-04/a.csv", FILE_A.replace("1500,W", "3000,W").replace("M1,2024-03-05T00:30:00Z,2.0,kW\n", "")
    )
    summary = run(platform)
    assert sorted(summary.days) == [MON, TUE]
    assert table(platform, MON).filter(pl.col("meter_id") == "M1").get_column("energy_kw").to_list() == [
        3.0,
        1.0,
    ]
    assert table(platform, TUE).height == 0
    assert platform.query("SELECT peak_kw FROM daily_peaks WHERE reading_date = ?", [MON]).item() == 5.5
    assert platform.query("SELECT count(*) FROM meter_readings").item() == 5


def test_broken_files_are_set_aside_and_the_day_goes_on(platform):
    platform.drop("2024-03-04/good.csv", csv("M1,2024-03-04T10:00:00Z,1,kW"))
    platform.landing.write("2024-03-04/garbage.csv", bytes(range(256)) * 4)
    platform.landing.write("2024-03-04/latin1.csv", csv("Zähler,2024-03-04T10:00:00Z,1,kW").encode("latin-1"))
    platform.drop("2024-03-04/no-unit.csv", "meter_id,timestamp,energy_value\nM1,2024-03-04T10:00:00Z,1\n")
    platform.drop("2024-03-04/empty.csv", "")
    summary = run(platform)
    assert summary.ingest == {"files_staged": 1, "files_failed": 4, "rows_staged": 1}
    assert summary.days[MON]["kept"] == 1

    notes = {}
    for obj in platform.lake.list("failed/"):
        if obj.key.endswith(".reason.json"):
            note = lake.read_json(platform.lake, obj.key)
            notes[note["source_key"]] = note["reason"]
            # The broken file itself is kept beside its note, untouched.
            kept = platform.lake.read(obj.key.removesuffix(".reason.json"))
            assert kept == platform.landing.read(note["source_key"])
    assert notes == {
        "2024-03-04/garbage.csv": "not_text",
        "2024-03-04/latin1.csv": "bad_encoding",
        "2024-03-04/no-unit.csv": "missing_columns",
        "2024-03-04/empty.csv": "empty_file",
    }
    ledger = ingestion.load_ledger(platform.lake)
    assert ledger.filter(pl.col("status") == "failed").height == 4


def test_hostile_values_are_quarantined_with_a_reason_or_stored_verbatim(platform):
    injection = "x'); DROP TABLE meter_readings;--"
    platform.drop(
        "hostile.csv",
        csv(
            f"{'M' * 10_000},2024-03-04T10:00:00Z,1,kW",
            "nul\x00meter,2024-03-04T10:00:00Z,1,kW",
            f'"{injection}",2024-03-04T10:00:00Z,2,kW',
            '"quote ""q"", comma",2024-03-04T10:00:00Z,3,kW',
        ),
    )
    summary = run(platform)
    assert (summary.days[MON]["kept"], summary.days[MON]["quarantined"]) == (2, 2)
    stored = platform.query("SELECT meter_id, energy_kw FROM meter_readings ORDER BY energy_kw").rows()
    assert stored == [(injection, 2.0), ('quote "q", comma', 3.0)]
    quarantined = lake.read_jsonl(platform.lake, lake.quarantine_key(MON)).sort("line_number")
    assert quarantined.select("reason").to_series().to_list() == ["invalid_meter_id", "invalid_meter_id"]
    assert quarantined.get_column("meter_id").to_list() == ["M" * 10_000, "nul\x00meter"]


def test_a_day_without_a_reading_that_can_peak_reports_no_peak(platform):
    # Every reading of the day is missing: the day has rows, but no peak (not a peak of 0 kW).
    platform.drop("2024-03-04/a.csv", csv("M1,2024-03-04T17:00:00Z,,kW", "M2,2024-03-04T17:00:00Z,NaN,kW"))
    summary = run(platform)
    assert "peak_kw" not in summary.days[MON] and "peak_ts" not in summary.days[MON]
    assert (
        "2024-03-04  2     0            0          0          0              -        -" in summary.render()
    )
    assert platform.query("SELECT * FROM daily_peaks").rows() == [(MON, None, None, 0)]
    event = platform.instance.get_latest_materialization_event(dg.AssetKey("daily_peaks"))
    metadata = event.asset_materialization.metadata
    assert "peak_kw" not in metadata and "peak_ts" not in metadata
    assert (metadata["dagster/row_count"].value, metadata["meters_reporting"].value) == (1, 0)
    assert "| reading_date | peak_ts | peak_kw | meters_reporting |" in metadata["preview"].value
