"""Policies every asset shares, applied in one place."""

from datetime import date

import dagster as dg
import polars as pl

from greenstream_assets.defs.checks import markdown_table, owned

# Transient I/O errors (a busy disk, a throttled bucket, a dropped connection) are retried.
IO_RETRY = dg.RetryPolicy(max_retries=3, delay=1, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
# Every step that writes the warehouse runs in this pool: a DuckDB file has one writer at a time.
WAREHOUSE_POOL = "greenstream_warehouse"
PREVIEW_ROWS = 5


def partition_day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def preview(frame: pl.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(frame.head(PREVIEW_ROWS)))


class Preview:
    """The first rows over a day's slices, for the UI: copied out of each slice (see ``owned``)."""

    def __init__(self, rows: int = PREVIEW_ROWS) -> None:
        self.rows = rows
        self.frames: list[pl.DataFrame] = []
        self.taken = 0

    def add(self, frame: pl.DataFrame) -> None:
        if not self.frames or self.taken < self.rows:
            part = owned(frame.head(self.rows - self.taken))
            self.frames.append(part)
            self.taken += part.height

    def value(self) -> dg.MetadataValue:
        return preview(pl.concat(self.frames, how="diagonal_relaxed"))
