"""The bridge from pandera to Dagster asset checks: counts per failed check and a sample table."""

import warnings

import dagster as dg
import pandera.polars as pa
import polars as pl

from greenstream_assets.defs.partitions import daily_partitions

RAW_SCHEMA = "raw_schema"
CLEANSED_SCHEMA = "cleansed_schema"
ROWS_CONSERVED = "rows_conserved"
TABLE_SCHEMA = "table_schema"
ARCHIVE_MATCHES_TABLE = "archive_matches_table"

SAMPLE_ROWS = 10
IDENTIFYING_COLUMNS = ("meter_id", "reading_ts", "source_file", "line_number")


def daily_check(
    name: str, asset: str | dg.AssetKey, description: str, blocking: bool = False
) -> dg.AssetCheckSpec:
    """A check evaluated per day partition, so the UI shows a result for each day."""
    with warnings.catch_warnings():
        # Partitioned check specs are a preview in Dagster 1.13 (tested here; see README).
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=daily_partitions
        )


def schema_check_result(
    check_name: str, asset_key: dg.AssetKey, model: type[pa.DataFrameModel], frame: pl.DataFrame
) -> dg.AssetCheckResult:
    """Validate every row (``lazy=True``); fail with per-check counts and a sample of failures."""
    try:
        model.validate(frame, lazy=True)
        failures = pl.DataFrame()
    except pa.errors.SchemaErrors as err:
        failures = err.failure_cases
    metadata: dict[str, dg.RawMetadataValue] = {
        "rows_checked": dg.MetadataValue.int(frame.height),
        "failures": dg.MetadataValue.int(failures.height),
    }
    if failures.height:
        per_check = (
            failures.group_by("column", "check")
            .len()
            .sort("len", descending=True)
            .with_columns(pl.col("column").fill_null("(frame)"))
        )
        for column, check, count in per_check.iter_rows():
            metadata[f"failures[{column}:{check}]"] = dg.MetadataValue.int(count)
        sample = failures.head(SAMPLE_ROWS).select(
            pl.col("column").fill_null(""),
            "check",
            pl.col("failure_case").cast(pl.String).str.slice(0, 120),
            "index",
        )
        # Name the reading, not just its position: which meter and instant, from which file and line.
        ident = [c for c in IDENTIFYING_COLUMNS if c in frame.columns]
        if ident and frame.height:
            rows = frame.select(ident).with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
            sample = sample.with_columns(pl.col("index").cast(pl.Int64)).join(rows, on="index", how="left")
        metadata["failure_sample"] = dg.MetadataValue.md(markdown_table(sample))
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=failures.height == 0,
        metadata=metadata,
        description=model.__doc__,
    )


def markdown_table(frame: pl.DataFrame) -> str:
    """A small frame as a markdown table for the UI (cells escaped, never the whole frame)."""

    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])
