"""Shared pieces of the end-to-end tests: a throwaway platform on local storage (landing folder,
lake folder, embedded DuckDB file) and meter files whose outcome is known row for row."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from greenstream_assets.storage.blobs import LocalBlobStore
from greenstream_assets_tests.conftest import csv

# The core chain and its checks as the README describes them (the code location may hold more).
CORE_CHECKS = [
    ("raw_meter_files", "raw_schema"),
    ("cleansed_readings", "cleansed_schema"),
    ("cleansed_readings", "rows_conserved"),
    ("meter_readings", "table_schema"),
    ("meter_readings_archive", "archive_matches_table"),
]
DAILY_JOB = "daily_readings_job"
INGEST_JOB = "ingest_landing_job"
SENSOR = "landing_zone_sensor"


@dataclass(frozen=True)
class DayFile:
    """A landing-zone file for one UTC day and what the rules must make of it."""

    key: str
    day: date
    text: str
    raw_rows: int
    kept: int  # rows in meter_readings (missing values included)
    quarantined: int
    collapsed: int

    def check_metadata(self) -> dict[tuple[str, str], dict[str, int]]:
        """The metadata each core check must record for this day when the day holds only this file."""
        return {
            ("raw_meter_files", "raw_schema"): {"failures": 0, "rows_checked": self.raw_rows},
            ("cleansed_readings", "cleansed_schema"): {"failures": 0, "rows_checked": self.kept},
            ("cleansed_readings", "rows_conserved"): {
                "rows_in": self.raw_rows,
                "rows_kept": self.kept,
                "rows_quarantined": self.quarantined,
                "rows_collapsed": self.collapsed,
                "unaccounted": 0,
            },
            ("meter_readings", "table_schema"): {"failures": 0, "rows_checked": self.kept},
            ("meter_readings_archive", "archive_matches_table"): {
                "rows_archived": self.kept,
                "rows_expected": self.kept,
            },
        }


def meter_day_file(key: str, day: date, meters: Iterable[str], defects: bool = True) -> DayFile:
    """Hourly kW readings of ``meters`` on ``day``; with ``defects``, also one row sent twice
    (collapsed), a negative value and an unknown unit (quarantined), a W value and a missing value
    (both kept)."""
    rows = [
        f"{meter},{day.isoformat()}T{hour:02d}:00:00Z,{0.5 + 0.25 * i + 0.05 * hour:.3f},kW"
        for i, meter in enumerate(meters)
        for hour in range(24)
    ]
    regular = len(rows)
    if not defects:
        return DayFile(key, day, csv(*rows), regular, regular, 0, 0)
    d = day.isoformat()
    rows += [
        rows[0],  # sent twice: collapses to one reading
        f"NEG-1,{d}T05:30:00Z,-2.5,kW",  # negative_value
        f"UNIT-1,{d}T06:30:00Z,1.0,kWh",  # invalid_unit
        f"WATT-1,{d}T07:30:00Z,1500,W",  # kept as 1.5 kW
        f"NULL-1,{d}T08:30:00Z,,kW",  # kept, is_missing
    ]
    return DayFile(key, day, csv(*rows), regular + 5, regular + 2, 2, 1)


@dataclass
class LocalPlatform:
    """The embedded default: a landing folder, a lake folder and a DuckDB file, all under ``root``."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def warehouse_dir(self) -> Path:
        return self.root / "warehouse"

    @property
    def warehouse(self) -> Path:
        return self.warehouse_dir / "greenstream.duckdb"

    @property
    def env(self) -> dict[str, str]:
        return {
            "GREENSTREAM_LANDING": str(self.landing),
            "GREENSTREAM_LAKE": str(self.lake),
            "GREENSTREAM_WAREHOUSE": str(self.warehouse),
        }

    def drop(self, *files: DayFile) -> None:
        """Files land together, as one upload into a new folder (the first part of their keys):
        written into a hidden folder (the sensor skips dot-names), then made visible by one rename,
        so no sensor tick sees half of them."""
        [folder] = {file.key.split("/")[0] for file in files}
        assert not (self.landing / folder).exists(), f"{folder} already landed"
        self.landing.mkdir(parents=True, exist_ok=True)
        upload = self.landing / f".upload-{uuid.uuid4().hex[:8]}"
        store = LocalBlobStore(upload)
        for file in files:
            store.write(file.key, file.text.encode())
        os.rename(upload / folder, self.landing / folder)
        upload.rmdir()

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        """Read the warehouse as an analyst would, on a short-lived read-only connection (DuckDB
        allows one writing process per file: call this only while no run is writing)."""
        with duckdb.connect(str(self.warehouse), read_only=True) as conn:
            return conn.execute(sql, params or []).fetchall()

    def rows_per_day(self, table: str = "meter_readings") -> dict[str, int]:
        rows = self.query(f"SELECT reading_date, count(*) FROM {table} GROUP BY 1 ORDER BY 1")
        return {day.isoformat(): count for day, count in rows}

    def duplicate_readings(self) -> int:
        """Rows beyond the first for any (meter, instant): zero when every reading is stored once."""
        [(extra,)] = self.query(
            "SELECT count(*) - count(DISTINCT (meter_id, reading_ts)) FROM meter_readings"
        )
        return extra
