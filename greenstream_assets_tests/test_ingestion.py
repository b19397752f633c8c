"""Ingestion: plain files parsed a chunk at a time stage exactly what file-by-file parsing stages."""

from datetime import UTC, date, datetime

import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.storage.blobs import LocalBlobStore
from greenstream_assets_tests.conftest import csv

MON = date(2024, 3, 4)
NOW = datetime(2024, 3, 5, 6, tzinfo=UTC)
FILES = {
    "a.csv": csv("M1,2024-03-04T00:00:00Z,1.5,kW", "M1,2024-03-04T00:15:00Z,,kW"),
    "b.csv": csv("M2,2024-03-04T00:00:00Z,2,W", "M2,2024-03-05T00:00:00Z,3,kW"),
    "c.csv": csv("kW,2024-03-04T00:00:00Z,4,M3", header="energy_unit,timestamp,energy_value,meter_id"),
    "d.csv": "",
}


def ingest(root):
    landing, lake_store = LocalBlobStore(root / "landing"), LocalBlobStore(root / "lake")
    for key, text in FILES.items():
        landing.write(key, text.encode())
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    ledger = ingestion.load_ledger(lake_store)
    days = {day: ingestion.load_day_rows(lake_store, ledger, day) for day in report.affected_days}
    return report, ledger, days


def test_plain_files_parsed_together_stage_what_file_by_file_parsing_stages(tmp_path, monkeypatch):
    report, ledger, days = ingest(tmp_path / "together")
    with monkeypatch.context() as patch:
        patch.setattr(ingestion, "read_meter_files", lambda bodies: None)  # always file by file
        one_by_one = ingest(tmp_path / "one-by-one")

    assert (report.files_staged, report.files_failed, report.rows_staged) == (3, 1, 5)
    assert report.affected_days == one_by_one[0].affected_days == [MON, date(2024, 3, 5)]
    columns = ["key", "status", "reason", "day", "rows"]
    assert ledger.select(columns).sort("key", "day").equals(one_by_one[1].select(columns).sort("key", "day"))
    for day, rows in days.items():
        assert rows.sort("source_file", "line_number").equals(
            one_by_one[2][day].sort("source_file", "line_number")
        )
    assert days[MON].sort("source_file", "line_number").select(
        "meter_id", "energy_value", "source_file", "line_number"
    ).rows() == [
        ("M1", "1.5", "a.csv", 2),
        ("M1", None, "a.csv", 3),
        ("M2", "2", "b.csv", 2),
        ("M3", "4", "c.csv", 2),
    ]
    assert days[MON].schema == pl.Schema(ingestion.RAW_STAGED_SCHEMA)
