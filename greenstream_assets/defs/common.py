"""Policies every asset shares, applied in one place."""

from datetime import date

import dagster as dg
import polars as pl

from greenstream_assets.defs.checks import markdown_table
from greenstream_assets.defs.partitions import daily_partitions

# Transient I/O errors (a busy disk, a throttled bucket, a dropped connection) are retried.
IO_RETRY = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
# Every step that writes the warehouse runs in this pool: a DuckDB file has one writer at a time.
WAREHOUSE_POOL = "greenstream_warehouse"
PREVIEW_ROWS = 5


def daily_asset(**kwargs):
    """``dg.asset`` for a per-day asset: the shared daily partitions and the I/O retry policy."""
    return dg.asset(partitions_def=daily_partitions, retry_policy=IO_RETRY, **kwargs)


def partition_day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def preview(frame: pl.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(frame.head(PREVIEW_ROWS)))
