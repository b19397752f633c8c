"""Resources: where the platform reads and writes, and the rule book's thresholds.

Locations come from the environment at run time (never at import), with embedded defaults, so the
same definitions run on a laptop folder today and on S3/PostgreSQL by configuration alone.
"""

import os
from datetime import date

import dagster as dg

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.storage.blobs import BlobStore, open_blob_store
from greenstream_assets.storage.warehouse import Warehouse, open_warehouse

DEFAULT_LANDING = "./data/landing"
DEFAULT_LAKE = "./data/lake"
DEFAULT_WAREHOUSE = "./data/warehouse.duckdb"


class StorageResource(dg.ConfigurableResource):
    """The landing zone, the lake and the warehouse. Empty fields fall back to
    GREENSTREAM_LANDING / GREENSTREAM_LAKE / GREENSTREAM_WAREHOUSE, then to ./data/."""

    landing: str = ""
    lake: str = ""
    warehouse: str = ""

    def landing_url(self) -> str:
        return self.landing or os.environ.get("GREENSTREAM_LANDING", DEFAULT_LANDING)

    def lake_url(self) -> str:
        return self.lake or os.environ.get("GREENSTREAM_LAKE", DEFAULT_LAKE)

    def warehouse_url(self) -> str:
        return self.warehouse or os.environ.get("GREENSTREAM_WAREHOUSE", DEFAULT_WAREHOUSE)

    def landing_store(self) -> BlobStore:
        return open_blob_store(self.landing_url())

    def lake_store(self) -> BlobStore:
        return open_blob_store(self.lake_url())

    def open_warehouse(self) -> Warehouse:
        warehouse = open_warehouse(self.warehouse_url())
        warehouse.ensure_schema()
        return warehouse


class RulesResource(dg.ConfigurableResource):
    """The rule book's thresholds (defaults as documented in the README)."""

    timezone: str = "UTC"
    max_kw: float = 100.0
    near_zero_kw: float = 0.01
    min_zero_hours: float = 6.0
    peak_start_hour: int = 17
    peak_end_hour: int = 21
    peak_weekdays: list[int] = [1, 2, 3, 4, 5]
    earliest_day: str = "2015-01-01"

    def config(self) -> RulesConfig:
        return RulesConfig(
            timezone=self.timezone,
            max_kw=self.max_kw,
            near_zero_kw=self.near_zero_kw,
            min_zero_hours=self.min_zero_hours,
            peak_start_hour=self.peak_start_hour,
            peak_end_hour=self.peak_end_hour,
            peak_weekdays=tuple(self.peak_weekdays),
            earliest_day=date.fromisoformat(self.earliest_day),
        )
