"""Shared fixtures: a throwaway landing zone, lake and DuckDB warehouse per test, on a local
folder or on S3 (moto's server mode over HTTP, talked to with boto3 exactly as to AWS)."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import dagster as dg
import polars as pl
import pytest

from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.storage.blobs import BlobStore
from greenstream_assets_tests.pg import pg_schema, pg_url  # noqa: F401  (fixtures)

# A distinctive secret, so a test can prove it never reaches logs or metadata.
S3_SECRET = "gs-test-secret-8d1f0c"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    "AWS_REGION": "us-east-1",
}


# Days in tests are a few rows: four rows per slice of meters makes every suite run the sliced code
# path with many slices (some empty), with the same exact expectations as one slice.
SLICE_ROWS = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    server: object = field(repr=False)

    def client(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}", server)
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The standard AWS configuration, pointed at the local endpoint."""
    for name, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_server.endpoint}.items():
        monkeypatch.setenv(name, value)
    return s3_server


def new_bucket(server: S3Server) -> str:
    bucket = f"greenstream-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    return bucket


@dataclass
class Platform:
    kind: str
    root: Path
    storage: StorageResource
    landing: BlobStore
    lake: BlobStore
    instance: dg.DagsterInstance
    s3: S3Server | None = None

    def drop(self, key: str, text: str) -> None:
        """A file lands in the landing zone."""
        self.landing.write(key, text.encode())

    def query(self, sql: str, params: list | None = None):
        return self.storage.open_warehouse().query(sql, params)

    def scan_archive(self) -> pl.LazyFrame:
        """The archive as one hive-partitioned table, the way an analyst's engine reads it."""
        if self.s3 is None:
            return pl.scan_parquet(self.root / "lake/archive/meter_readings/", hive_partitioning=True)
        options = {
            "aws_endpoint_url": self.s3.endpoint,
            "aws_allow_http": "true",
            "aws_access_key_id": "testing",
            "aws_secret_access_key": S3_SECRET,
            "aws_region": "us-east-1",
        }
        return pl.scan_parquet(
            self.lake.url + "archive/meter_readings/", hive_partitioning=True, storage_options=options
        )


@pytest.fixture(params=["local", "s3", "postgres"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """The same suites run on the embedded default (folder + DuckDB), with the lake on S3, and with
    the warehouse on PostgreSQL."""
    yield from _platform(request.param, request, tmp_path)


@pytest.fixture
def s3_platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    """For scenarios that only exist on S3 (odd keys, throttling, listings past 1,000 keys)."""
    yield from _platform("s3", request, tmp_path)


def _platform(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    s3 = None
    if kind == "local":
        storage = StorageResource(
            landing=str(tmp_path / "landing"),
            lake=str(tmp_path / "lake"),
            warehouse=str(tmp_path / "warehouse.duckdb"),
            slice_rows=SLICE_ROWS,
        )
    elif kind == "postgres":
        storage = StorageResource(
            landing=str(tmp_path / "landing"),
            lake=str(tmp_path / "lake"),
            warehouse=request.getfixturevalue("pg_url"),
            warehouse_schema=request.getfixturevalue("pg_schema"),
            slice_rows=SLICE_ROWS,
        )
    elif kind == "s3":
        s3 = request.getfixturevalue("s3_env")
        bucket = new_bucket(s3)
        storage = StorageResource(
            landing=f"s3://{bucket}/landing",
            lake=f"s3://{bucket}/lake",
            warehouse=str(tmp_path / "warehouse.duckdb"),
            slice_rows=SLICE_ROWS,
        )
    else:
        raise ValueError(f"unknown platform kind {kind!r}")
    with dg.instance_for_test() as instance:
        yield Platform(kind, tmp_path, storage, storage.landing_store(), storage.lake_store(), instance, s3)


def csv(*rows: str, header: str = "meter_id,timestamp,energy_value,energy_unit") -> str:
    return "\n".join([header, *rows]) + "\n"


def day_job_after_a_change(platform: Platform, first: str, second: str) -> dg.JobDefinition:
    """``first`` landed as a.csv and run through every step, then ``second`` landed over it and
    ingested (not run): the daily job, for a test to materialize parts of the day from there."""
    from greenstream_assets.definitions import build_definitions
    from greenstream_assets.defs.jobs import daily_job, ingest_job
    from greenstream_assets.runner import run_landing_zone

    resources = {"storage": platform.storage}
    platform.drop("a.csv", first)
    assert run_landing_zone(instance=platform.instance, resources=resources).failed == []
    platform.drop("a.csv", second)
    defs = build_definitions(resources)
    assert defs.resolve_job_def(ingest_job.name).execute_in_process(instance=platform.instance).success
    return defs.resolve_job_def(daily_job.name)
