"""Shared fixtures: a throwaway landing zone, lake and DuckDB warehouse per test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.storage.blobs import LocalBlobStore


@dataclass
class Platform:
    root: Path
    storage: StorageResource
    landing: LocalBlobStore
    lake: LocalBlobStore
    instance: dg.DagsterInstance

    def drop(self, key: str, text: str) -> None:
        """A file lands in the landing zone."""
        self.landing.write(key, text.encode())

    def query(self, sql: str, params: list | None = None):
        return self.storage.open_warehouse().query(sql, params)


@pytest.fixture
def platform(tmp_path: Path) -> Platform:
    storage = StorageResource(
        landing=str(tmp_path / "landing"),
        lake=str(tmp_path / "lake"),
        warehouse=str(tmp_path / "warehouse.duckdb"),
    )
    with dg.instance_for_test() as instance:
        yield Platform(
            root=tmp_path,
            storage=storage,
            landing=LocalBlobStore(tmp_path / "landing"),
            lake=LocalBlobStore(tmp_path / "lake"),
            instance=instance,
        )


def csv(*rows: str, header: str = "meter_id,timestamp,energy_value,energy_unit") -> str:
    return "\n".join([header, *rows]) + "\n"
