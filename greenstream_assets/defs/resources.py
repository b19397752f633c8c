"""Resources: where the platform reads and writes, and the rule book's thresholds.

Locations come from the environment at run time (never at import), with embedded defaults, so the
same definitions run on a laptop folder today and on S3/PostgreSQL by configuration alone.
"""

import os
from datetime import date
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.storage.blobs import BlobStore, open_blob_store
from greenstream_assets.storage.warehouse import DuckDBWarehouse, Warehouse, open_warehouse

DEFAULT_LANDING = "./data/landing"
DEFAULT_LAKE = "./data/lake"
DEFAULT_WAREHOUSE = "./data/warehouse.duckdb"
DEFAULT_SLICE_ROWS = 600_000


class StorageResource(dg.ConfigurableResource):
    """The landing zone, the lake and the warehouse. Empty fields fall back to
    GREENSTREAM_LANDING / GREENSTREAM_LAKE / GREENSTREAM_WAREHOUSE, then to ./data/."""

    landing: str = ""
    lake: str = ""
    warehouse: str = ""
    # PostgreSQL: the password comes from the environment (dg.EnvVar), never from the URL.
    warehouse_password: str = ""
    warehouse_schema: str = ""
    # S3: the default credential chain, AWS_REGION, and AWS_ENDPOINT_URL for S3-compatible stores.
    s3_max_attempts: int = 10
    # Rows per slice of meters in the heavy steps (0: GREENSTREAM_SLICE_ROWS, else 600,000). A day
    # is processed a slice at a time, so this bounds a step's memory, not the day's size.
    slice_rows: int = 0

    def landing_url(self) -> str:
        return self.landing or os.environ.get("GREENSTREAM_LANDING", DEFAULT_LANDING)

    def lake_url(self) -> str:
        return self.lake or os.environ.get("GREENSTREAM_LAKE", DEFAULT_LAKE)

    def warehouse_url(self) -> str:
        return self.warehouse or os.environ.get("GREENSTREAM_WAREHOUSE", DEFAULT_WAREHOUSE)

    def slice_rows_or_default(self) -> int:
        return self.slice_rows or int(os.environ.get("GREENSTREAM_SLICE_ROWS") or DEFAULT_SLICE_ROWS)

    def s3_client(self) -> Any:
        """A boto3 S3 client from dagster-aws, retrying throttling (503 SlowDown), resets and
        timeouts with backoff (botocore "standard" retry mode)."""
        return S3Resource(
            max_attempts=self.s3_max_attempts,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        ).get_client()

    def landing_store(self) -> BlobStore:
        return open_blob_store(self.landing_url(), self.s3_client)

    def lake_store(self) -> BlobStore:
        return open_blob_store(self.lake_url(), self.s3_client)

    def open_warehouse(self) -> Warehouse:
        schema = self.warehouse_schema or os.environ.get("GREENSTREAM_WAREHOUSE_SCHEMA", "greenstream")
        warehouse = open_warehouse(self.warehouse_url(), self.warehouse_password, schema)
        if not isinstance(warehouse, DuckDBWarehouse):
            # A DuckDB file's schema is made current on the step's first connection instead.
            warehouse.ensure_schema()
        return warehouse


class RulesResource(dg.ConfigurableResource):
    """The rule book's thresholds (defaults as documented in the README): every field of
    ``RulesConfig``, so a run can override any of them in the launchpad."""

    # Rule 1: a value in this unit times the factor is kW (W: value / 1000); any other unit is invalid.
    unit_factors: dict[str, float] = {"W": 0.001, "kW": 1.0}
    timezone: str = "UTC"
    max_meter_id_length: int = 128
    max_kw: float = 100.0
    near_zero_kw: float = 0.01
    min_zero_hours: float = 6.0
    peak_start_hour: int = 17
    peak_end_hour: int = 21
    peak_weekdays: list[int] = [1, 2, 3, 4, 5]
    earliest_day: str = "2015-01-01"
    interval_minutes: int = 15
    top_n_meters: int = 20
    short_gap_minutes: int = 60
    history_weeks: int = 4
    # Local days flagged is_holiday in the features, as YYYY-MM-DD.
    holidays: list[str] = []
    drift_factor: float = 3.0
    drift_window_days: int = 14
    min_drift_rate: float = 0.0

    def config(self) -> RulesConfig:
        """The typed config; a setting no rule can work with is refused with what is wrong."""
        problems = []
        if not self.unit_factors or any(not factor > 0 for factor in self.unit_factors.values()):
            problems.append(f"unit_factors must map each unit to a factor above 0, got {self.unit_factors}")
        if not (0 < self.interval_minutes <= 1440 and 1440 % self.interval_minutes == 0):
            problems.append(f"interval_minutes must divide a day (1440 minutes), got {self.interval_minutes}")
        for name in ("top_n_meters", "drift_window_days"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("short_gap_minutes", "history_weeks", "min_drift_rate"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.drift_factor > 0:
            problems.append(f"drift_factor must be above 0, got {self.drift_factor}")
        holidays = []
        for text in self.holidays:
            try:
                holidays.append(date.fromisoformat(text))
            except ValueError:
                problems.append(f"holidays: {text!r} is not a date (YYYY-MM-DD)")
        if problems:
            # A setting is no transient error: retrying the step would only fail again.
            raise dg.Failure("invalid rules settings: " + "; ".join(problems), allow_retries=False)
        return RulesConfig(
            unit_factors=dict(self.unit_factors),
            timezone=self.timezone,
            max_meter_id_length=self.max_meter_id_length,
            max_kw=self.max_kw,
            near_zero_kw=self.near_zero_kw,
            min_zero_hours=self.min_zero_hours,
            peak_start_hour=self.peak_start_hour,
            peak_end_hour=self.peak_end_hour,
            peak_weekdays=tuple(self.peak_weekdays),
            earliest_day=date.fromisoformat(self.earliest_day),
            interval_minutes=self.interval_minutes,
            top_n_meters=self.top_n_meters,
            short_gap_minutes=self.short_gap_minutes,
            history_weeks=self.history_weeks,
            holidays=tuple(sorted(set(holidays))),
            drift_factor=self.drift_factor,
            drift_window_days=self.drift_window_days,
            min_drift_rate=self.min_drift_rate,
        )
