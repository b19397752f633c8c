"""The code location: every asset, check, job, sensor and resource, loaded once."""

import gc
import os
import warnings

# What loading the code location allocates (Dagster's definitions, pandera with what it imports:
# about a million objects) lives as long as the process. The garbage collector is paused while
# it loads: its allocations would set off a full collection in the middle of the imports, which
# scans all of it with the GIL held (~0.1 s). Frozen at the end of this module, it is left out of
# every later full collection too.
_collecting = gc.isenabled()
gc.disable()
try:
    import dagster as dg

    from greenstream_assets.defs import analytics, ingestion, operations, quality, warehouse
    from greenstream_assets.defs.jobs import daily_job, ingest_job
    from greenstream_assets.defs.resources import RulesResource, StorageResource
    from greenstream_assets.defs.sensors import landing_zone_sensor
finally:
    if _collecting:
        gc.enable()


def default_storage() -> StorageResource:
    """Locations from GREENSTREAM_* at run time; the warehouse password, when there is one, from
    GREENSTREAM_WAREHOUSE_PASSWORD through dg.EnvVar, so Dagster resolves it at run time and shows
    only the variable's name in the UI."""
    if "GREENSTREAM_WAREHOUSE_PASSWORD" in os.environ:
        return StorageResource(warehouse_password=dg.EnvVar("GREENSTREAM_WAREHOUSE_PASSWORD"))
    return StorageResource()


def storage_kinds(spec: dg.AssetSpec) -> dg.AssetSpec:
    """Kinds that say where this deployment keeps things: postgres instead of duckdb when the
    warehouse is PostgreSQL, and s3 on lake assets when the lake is a bucket."""
    kinds = set(spec.kinds)
    if (
        os.environ.get("GREENSTREAM_WAREHOUSE", "").startswith(("postgresql://", "postgres://"))
        and "duckdb" in kinds
    ):
        kinds = (kinds - {"duckdb"}) | {"postgres"}
    if os.environ.get("GREENSTREAM_LAKE", "").startswith("s3://") and kinds & {"parquet", "json"}:
        kinds |= {"s3"}
    return spec.replace_attributes(kinds=kinds)


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    """The definitions, with ``resources`` replacing the defaults (tests, other deployments)."""
    defs = dg.Definitions(
        assets=[
            ingestion.landing_files,
            quality.validate_day,
            warehouse.load_meter_readings,
            analytics.estimate_and_report,
        ],
        asset_checks=[operations.yesterday_landed],
        jobs=[ingest_job, daily_job, operations.freshness_job],
        schedules=[operations.freshness_schedule()],
        sensors=[landing_zone_sensor, operations.run_failure_alerts],
        resources={"storage": default_storage(), "rules": RulesResource(), **(resources or {})},
        # A day's steps are cheap next to a process start (~3 s each): run them in one process and
        # get parallelism across days (runs) instead.
        executor=dg.in_process_executor,
    )
    with warnings.catch_warnings():
        # map_resolved_asset_specs is a preview in Dagster 1.13 (covered by test_definitions).
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return defs.map_resolved_asset_specs(func=storage_kinds)


defs = build_definitions()

# Everything loaded by now, frozen: left out of the garbage collector's full collections, which
# otherwise scan all of it with the GIL held, ~0.15-0.3 s each, in the middle of a run's steps
# (README, "Benchmarks"). It is only ever freed at exit anyway.
gc.freeze()
