"""Rule 3 (parsing half): ISO 8601 timestamps, with or without zone, to UTC instants."""

from __future__ import annotations

import polars as pl

_OFFSET = r"[+-]\d{2}:?\d{2}$"


def parse_timestamp(column: str | pl.Expr, timezone: str) -> pl.Expr:
    """Parse ISO 8601 text to a UTC ``Datetime``; anything unparseable becomes null.

    Accepted: ``T`` or a space between date and time (either case), optional seconds and fractions
    (a decimal point or comma), and a trailing ``Z``, ``+HH:MM``/``+HHMM``/``+HH`` offset, or
    nothing. Text without an offset is local time in ``timezone``; a local time that does not exist
    (the spring-forward gap) is null, and an ambiguous one (the autumn fall-back hour) takes the
    earlier instant.
    """
    text = column if isinstance(column, pl.Expr) else pl.col(column)
    norm = (
        text.str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[ Tt]", "${1}T")
        .str.replace(r"(?i)Z$", "+00:00")
        # A decimal comma, as ISO 8601 allows it ("08:15:00,5").
        .str.replace(r"(T\d{2}:\d{2}:\d{2}),(\d+)", "${1}.${2}")
        # Minutes-only times ("T08:15") get explicit seconds.
        .str.replace(r"(T\d{2}:\d{2})([+-]|$)", "${1}:00${2}")
        # An offset of whole hours ("+01") gets its minutes.
        .str.replace(r"(T\d{2}:\d{2}:\d{2}(?:\.\d+)?[+-]\d{2})$", "${1}:00")
    )
    with_offset = norm.str.to_datetime(
        "%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_unit="us", time_zone="UTC"
    )
    local = (
        norm.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
        .dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    return pl.when(norm.str.contains(_OFFSET)).then(with_offset).otherwise(local)


def parse_timestamp_column(text: pl.Series, timezone: str) -> pl.Series:
    """``parse_timestamp`` over a column, parsing each distinct text once.

    A day of 4.8M readings holds a few hundred distinct timestamps (one per interval, a few
    spellings): parsing those and joining back is ~10x faster than parsing every row.
    """
    distinct = pl.DataFrame({"text": text.unique()}).with_columns(ts=parse_timestamp("text", timezone))
    return (
        text.to_frame("text")
        .join(distinct, on="text", how="left", nulls_equal=True, maintain_order="left")
        .get_column("ts")
        .alias(text.name)
    )


def instants_overlap(earlier: pl.DataFrame, later: pl.DataFrame) -> bool:
    """Whether a row of ``earlier`` can share an instant with one of ``later``: some ``reading_ts``
    of ``earlier`` falls within ``later``'s range. False when either is empty. History from other
    days (the usual case) shares none, so the anti join that lets ``later``'s rows win is skipped."""
    if earlier.height == 0 or later.height == 0:
        return False
    first, last = later.select(first=pl.col("reading_ts").min(), last=pl.col("reading_ts").max()).row(0)
    if first is None:
        return False
    return bool(earlier.select(pl.col("reading_ts").is_between(first, last).any()).item())


def utc_day(ts: pl.Expr) -> pl.Expr:
    """The UTC calendar day of an instant: the day partition a reading belongs to."""
    return ts.dt.date()
