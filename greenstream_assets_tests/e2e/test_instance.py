"""The production instance configuration, and day partitions running side by side on a
PostgreSQL-backed Dagster instance with the queued run coordinator."""

import shutil
import time
import uuid
from datetime import date, timedelta

import dagster as dg
import psycopg
import pytest
import yaml

from greenstream_assets.generate import NO_DEFECTS, write_day
from greenstream_assets.storage.blobs import LocalBlobStore
from greenstream_assets.storage.postgres import PostgresWarehouse
from greenstream_assets_tests.e2e.dagster_dev import REPO, DagsterDev

FIRST_DAY = date(2024, 3, 4)


@pytest.fixture
def dagster_db(pg_url, monkeypatch):
    """A database of its own for Dagster's run, event and schedule storage."""
    name = f"gs_dagster_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    env = {
        "DAGSTER_PG_HOST": info.get("host", "127.0.0.1"),
        "DAGSTER_PG_PORT": str(info.get("port", 5432)),
        "DAGSTER_PG_USER": info.get("user", "postgres"),
        "DAGSTER_PG_PASSWORD": info.get("password", ""),
        "DAGSTER_PG_DB": name,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield env
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def production_config() -> dict:
    return yaml.safe_load((REPO / "deploy/dagster.yaml").read_text())


def test_the_production_instance_config_loads_and_says_what_it_should(dagster_db, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_BUCKET", "greenstream-logs")
    arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:{}"
    monkeypatch.setenv("GREENSTREAM_WAREHOUSE_PASSWORD_ARN", arn.format("warehouse"))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD_ARN", arn.format("dagster"))
    shutil.copy(REPO / "deploy/dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        # The passwords go to each run's task as secrets by reference, never as plain env values.
        launcher = instance.run_launcher
        assert not {"GREENSTREAM_WAREHOUSE_PASSWORD", "DAGSTER_PG_PASSWORD"} & set(launcher.env_vars)
        assert launcher.secrets == [
            {"name": "GREENSTREAM_WAREHOUSE_PASSWORD", "valueFrom": arn.format("warehouse")},
            {"name": "DAGSTER_PG_PASSWORD", "valueFrom": arn.format("dagster")},
        ]
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "EcsRunLauncher"
        assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 4
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            concurrency.run_queue_config.tag_concurrency_limits
        )
    finally:
        instance.dispose()


def test_four_days_run_concurrently_on_a_postgres_instance(dagster_db, pg_url, pg_schema, tmp_path):
    config = production_config()
    # Same storage, coordinator, pools and monitoring; runs launched as local processes and step
    # logs kept locally, since this machine has no ECS and no log bucket.
    del config["run_launcher"], config["compute_logs"]
    meters = 1_500
    landing = LocalBlobStore(tmp_path / "landing")
    days = [FIRST_DAY + timedelta(days=i) for i in range(4)]
    for i, day in enumerate(days):
        write_day(landing, meters, day, 15, "batch", NO_DEFECTS, seed=i)
    env = {
        **dagster_db,
        "GREENSTREAM_LANDING": str(tmp_path / "landing"),
        "GREENSTREAM_LAKE": str(tmp_path / "lake"),
        "GREENSTREAM_WAREHOUSE": pg_url,
        "GREENSTREAM_WAREHOUSE_SCHEMA": pg_schema,
    }
    server = DagsterDev(tmp_path / "home", env, config).start()
    try:
        instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            daily = [r for r in runs if r.job_name == "daily_readings_job"]
            if len(daily) == 4 and all(r.is_finished for r in runs):
                break
            time.sleep(2)
        else:
            raise AssertionError(
                f"runs did not finish: {[(r.job_name, r.status) for r in instance.get_runs()]}"
            )
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}, server.log_path.read_text()[-3000:]
        assert sorted(r.tags["dagster/partition"] for r in daily) == [d.isoformat() for d in days]
        # They ran side by side (the queue let them all start; on 2 cores they overlap in pairs).
        records = sorted(
            instance.get_run_records(dg.RunsFilter(job_name="daily_readings_job")), key=lambda r: r.start_time
        )
        overlaps = sum(
            later.start_time < earlier.end_time for earlier, later in zip(records, records[1:], strict=False)
        )
        assert overlaps >= 2, [(r.start_time, r.end_time) for r in records]
        instance.dispose()
    finally:
        server.stop()
    warehouse = PostgresWarehouse(pg_url, schema=pg_schema)
    counts = warehouse.query("SELECT reading_date, count(*) FROM meter_readings GROUP BY 1 ORDER BY 1").rows()
    assert counts == [(d, meters * 96) for d in days]
    assert warehouse.query("SELECT count(*) FROM daily_peaks").item() == 4
    assert "could not set lock" not in (tmp_path / "home" / "dagster-dev.log").read_text().lower()
