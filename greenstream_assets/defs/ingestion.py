"""Ingestion: landing-zone files staged by day, and each day's raw rows with their manifest."""

import dagster as dg
import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.defs.checks import RAW_SCHEMA, SchemaCheck, daily_check
from greenstream_assets.defs.common import IO_RETRY, daily_asset, partition_day, preview
from greenstream_assets.defs.resources import RulesResource, StorageResource
from greenstream_assets.schemas import RawReadings
from greenstream_assets.storage import lake


@dg.asset(group_name="ingestion", kinds={"polars", "parquet"}, retry_policy=IO_RETRY)
def landing_files(storage: StorageResource, rules: RulesResource) -> dg.MaterializeResult:
    """Every file that landed from the meters, read once. New and re-sent files are backed up
    byte for byte under the lake's raw/, their rows staged by the day of each reading, and
    unreadable files (binary, wrong encoding, missing columns, empty) moved aside to failed/
    with a note saying why. The ledger it keeps is what the sensor reads to know which days to run."""
    report = ingestion.ingest_new_files(storage.landing_store(), storage.lake_store(), rules.config())
    metadata = {
        "files_staged": dg.MetadataValue.int(report.files_staged),
        "files_failed": dg.MetadataValue.int(report.files_failed),
        "files_unchanged": dg.MetadataValue.int(report.files_unchanged),
        "rows_staged": dg.MetadataValue.int(report.rows_staged),
        "affected_days": dg.MetadataValue.text(", ".join(d.isoformat() for d in report.affected_days)),
        "batch": dg.MetadataValue.text(report.batch or "(nothing new)"),
    }
    if report.failures:
        metadata["failed_files"] = preview(pl.DataFrame(report.failures))
    return dg.MaterializeResult(metadata=metadata)


@daily_asset(
    group_name="ingestion",
    deps=[landing_files],
    kinds={"polars", "parquet"},
    check_specs=[daily_check(RAW_SCHEMA, "raw_meter_files", description=RawReadings.__doc__)],
)
def raw_meter_files(context: dg.AssetExecutionContext, storage: StorageResource):
    """The day's readings exactly as the meters sent them (text, nothing dropped), from the
    current version of every file with readings on that day, each row traced to its file and line.
    Keeps a per-day manifest (key, size, checksum, row count, ledger batch, backup object) under
    raw/manifests/."""
    day = partition_day(context)
    store = storage.lake_store()
    ledger = ingestion.load_ledger(store)
    files = ingestion.day_files(ledger, day)
    check = SchemaCheck(RawReadings)
    with (
        ingestion.day_row_slices(store, ledger, day, storage.slice_rows_or_default()) as slices,
        lake.SliceWriter(store, lake.layer_key("raw_meter_files", day)) as out,
    ):
        for part in slices:
            out.write(part)
            check.add(part)
    manifest = {
        "day": day.isoformat(),
        "files_digest": ingestion.files_digest(files),
        "rows": out.rows,
        # Where each file's original bytes are kept: its own object under raw/files/, or (small
        # files) a member of the same name in a zip under raw/packs/ (lake.read_raw_backup).
        "files": files.select("key", "size", "checksum", "rows", "batch")
        .with_columns(ingestion.backup_objects(files))
        .to_dicts(),
    }
    lake.write_json(store, lake.raw_manifest_key(day), manifest)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(out.rows),
            "files": dg.MetadataValue.int(files.height),
            "source_files": preview(files.select("key", "size", "rows", pl.col("checksum").str.slice(0, 16))),
            "manifest": dg.MetadataValue.path(lake.raw_manifest_key(day)),
        }
    )
    yield check.result(RAW_SCHEMA, context.asset_key)
