"""Ingestion: landing-zone files staged by day (the raw rows of a day are built in defs/quality)."""

import dagster as dg
import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.defs.common import IO_RETRY, preview
from greenstream_assets.defs.resources import RulesResource, StorageResource


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
