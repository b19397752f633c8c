"""The bridge from pandera to Dagster asset checks: counts per failed check and a sample table."""

import warnings

import dagster as dg
import pandera.polars as pa
import polars as pl

from greenstream_assets.defs.partitions import daily_partitions
from greenstream_assets.storage import lake

RAW_SCHEMA = "raw_schema"
CLEANSED_SCHEMA = "cleansed_schema"
ROWS_CONSERVED = "rows_conserved"
TABLE_SCHEMA = "table_schema"
ARCHIVE_MATCHES_TABLE = "archive_matches_table"

SAMPLE_ROWS = 10
IDENTIFYING_COLUMNS = ("meter_id", "reading_ts", "source_file", "line_number")


def owned(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of a small frame that owns its memory. A ``head()`` of a slice shares the slice's
    buffers, so keeping it would keep the whole slice alive."""
    return pl.DataFrame(frame.rows(), schema=frame.schema, orient="row")


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


class SchemaCheck:
    """A pandera model evaluated over a day slice by slice: every row validated (``lazy=True``),
    failures counted per column and check, and a sample that names the failing readings.

    Uniqueness checks run within a slice. Slices cut a day by meter, so rows that share a meter
    (``meter_id, reading_ts``) or a file line (a line comes once, with its meter) share a slice.

    A slice is validated on a thread of the check's own while the step goes on with the next one
    (one slice in flight at most); ``result`` waits for the last.
    """

    def __init__(self, model: type[pa.DataFrameModel]) -> None:
        self.model = model
        self.rows = 0
        self.failures = 0
        self.per_check: dict[tuple[str, str], int] = {}
        self.samples: list[pl.DataFrame] = []
        self._behind = lake.OneBehind("schema-check")

    def add(self, frame: pl.DataFrame) -> None:
        self._behind.submit(self._validate, frame, self.rows)
        self.rows += frame.height

    def _validate(self, frame: pl.DataFrame, offset: int) -> None:
        try:
            self.model.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as err:
            self._record(err.failure_cases, frame, offset)

    def _record(self, failures: pl.DataFrame, frame: pl.DataFrame, offset: int) -> None:
        self.failures += failures.height
        counts = (
            failures.group_by("column", "check").len().with_columns(pl.col("column").fill_null("(frame)"))
        )
        for column, check, count in counts.iter_rows():
            self.per_check[(column, check)] = self.per_check.get((column, check), 0) + count
        taken = sum(sample.height for sample in self.samples)
        if taken >= SAMPLE_ROWS:
            return
        sample = failures.head(SAMPLE_ROWS - taken).select(
            pl.col("column").fill_null(""),
            "check",
            pl.col("failure_case").cast(pl.String).str.slice(0, 120),
            pl.col("index").cast(pl.Int64),
        )
        # Name the reading, not just its position: which meter and instant, from which file and line.
        ident = [c for c in IDENTIFYING_COLUMNS if c in frame.columns]
        if ident and frame.height:
            rows = frame.select(ident).with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))
            sample = sample.join(rows, on="index", how="left")
        # Positions count from the start of the day, not of the slice.
        self.samples.append(owned(sample.with_columns(pl.col("index") + offset)))

    def result(self, check_name: str, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
        self._behind.close()
        metadata: dict[str, dg.RawMetadataValue] = {
            "rows_checked": dg.MetadataValue.int(self.rows),
            "failures": dg.MetadataValue.int(self.failures),
        }
        for (column, check), count in sorted(self.per_check.items(), key=lambda kv: -kv[1]):
            metadata[f"failures[{column}:{check}]"] = dg.MetadataValue.int(count)
        if self.failures:
            sample = pl.concat(self.samples, how="diagonal_relaxed")
            metadata["failure_sample"] = dg.MetadataValue.md(markdown_table(sample))
        return dg.AssetCheckResult(
            check_name=check_name,
            asset_key=asset_key,
            passed=self.failures == 0,
            metadata=metadata,
            description=self.model.__doc__,
        )


def schema_check_result(
    check_name: str, asset_key: dg.AssetKey, model: type[pa.DataFrameModel], frame: pl.DataFrame
) -> dg.AssetCheckResult:
    """Validate every row of one frame (``lazy=True``); fail with per-check counts and a sample."""
    check = SchemaCheck(model)
    check.add(frame)
    return check.result(check_name, asset_key)


def markdown_table(frame: pl.DataFrame) -> str:
    """A small frame as a markdown table for the UI (cells escaped, never the whole frame)."""

    def cell(value: object) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *body])
