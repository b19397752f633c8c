"""The baseline a team would reach for first: the same six rules and the enrichment, in idiomatic
pandas (vectorized: no row loops, no ``apply``), written from the README's rule book.

It is the reference the polars rule book is measured against, not product code. It follows the same
semantics (first reason in README order, numbers compared as numbers, missing values kept, faulty
runs skipping missing readings) so both produce the same counts on the same rows; the benchmark
checks that they do.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd

REQUIRED = ("meter_id", "timestamp", "energy_value", "energy_unit")
MISSING_TOKENS = ["", "null", "none", "na", "n/a", "nan"]
UNIT_FACTORS = {"W": 0.001, "kW": 1.0}
REASONS = [
    "missing_meter_id",
    "invalid_meter_id",
    "invalid_timestamp",
    "timestamp_out_of_range",
    "conflicting_duplicate",
    "invalid_unit",
    "invalid_value",
    "negative_value",
]


@dataclass(frozen=True)
class Config:
    timezone: str = "UTC"
    max_meter_id_length: int = 128
    max_kw: float = 100.0
    near_zero_kw: float = 0.01
    min_zero_hours: float = 6.0
    peak_start_hour: int = 17
    peak_end_hour: int = 21
    peak_weekdays: tuple[int, ...] = (1, 2, 3, 4, 5)


class RejectedFile(ValueError):
    pass


def read_meter_csv(data: bytes, source_file: str) -> pd.DataFrame:
    """Rule 6: read a file whole as text, or reject it whole (unreadable, missing columns)."""
    if not data.strip():
        raise RejectedFile("empty_file")
    try:
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise RejectedFile("unparseable_csv") from err
    names = {str(col).strip().lower(): col for col in frame.columns}
    if any(col not in names for col in REQUIRED):
        raise RejectedFile("missing_columns")
    frame = frame[[names[col] for col in REQUIRED]]
    frame.columns = list(REQUIRED)
    frame["source_file"] = source_file
    frame["line_number"] = np.arange(2, len(frame) + 2, dtype="int64")
    return frame


def parse_timestamps(text: pd.Series, tz: str) -> pd.Series:
    """Rule 3: ISO 8601 text to UTC; no offset means local time in ``tz``; unparseable -> NaT."""
    text = text.str.strip()
    has_offset = text.str.contains(r"(?:[zZ]|[+-]\d{2}:?\d{2})$", na=False)
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[us, UTC]")
    if has_offset.any():
        parsed[has_offset] = pd.to_datetime(
            text[has_offset], format="ISO8601", utc=True, errors="coerce"
        ).dt.as_unit("us")
    naive = ~has_offset & text.notna()
    if naive.any():
        local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        parsed[naive] = (
            local.dt.tz_localize(tz, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT")
            .dt.tz_convert("UTC")
            .dt.as_unit("us")
        )
    return parsed


def validate(raw: pd.DataFrame, config: Config, day: date) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Rules 1-4 on raw text rows: (cleansed, quarantined, rows collapsed as exact duplicates)."""
    df = raw.reset_index(drop=True)
    meter = df["meter_id"].str.strip()
    meter = meter.where(meter.str.len() > 0)
    ts = parse_timestamps(df["timestamp"], config.timezone)

    value = df["energy_value"]
    value_text = value.str.strip()
    is_missing = (value.isna() | value_text.str.lower().isin(MISSING_TOKENS)).to_numpy(bool)
    number = pd.to_numeric(value_text, errors="coerce").astype("float64")
    # Infinities are not numbers to keep; -0 is 0.
    number = number.where(np.isfinite(number)).where(number != 0, 0.0)
    unit = df["energy_unit"].str.strip()
    factor = unit.map(UNIT_FACTORS).astype("float64")
    energy_kw = number * factor

    start = pd.Timestamp(datetime.combine(day, datetime.min.time(), UTC))
    in_day = ((ts >= start) & (ts < start + timedelta(days=1))).to_numpy(bool)
    eligible = meter.notna().to_numpy(bool) & in_day

    # Rule 3, duplicates: same meter, instant, value (as a number; text where it is not one;
    # missing equals missing) and unit collapse to the first; different rows for one key conflict.
    keys = pd.DataFrame(
        {
            "meter": meter,
            "ts": ts,
            "number": number.where(~is_missing),
            "text": value_text.where(~is_missing & number.isna().to_numpy(bool), ""),
            "unit": unit,
        }
    )[eligible]
    collapsed = np.zeros(len(df), dtype=bool)
    collapsed[eligible] = keys.duplicated(keep="first").to_numpy(bool)
    conflicting = np.zeros(len(df), dtype=bool)
    survivors = eligible & ~collapsed
    conflicting[survivors] = (
        keys[~collapsed[eligible]].duplicated(subset=["meter", "ts"], keep=False).to_numpy(bool)
    )

    bad_meter = (meter.str.len() > config.max_meter_id_length) | meter.str.contains(
        r"[\x00-\x1f\x7f]", na=False
    )
    conditions = [
        meter.isna().to_numpy(bool),
        bad_meter.fillna(False).to_numpy(bool),
        ts.isna().to_numpy(bool),
        ~in_day,
        conflicting,
        factor.isna().to_numpy(bool),
        ~is_missing & number.isna().to_numpy(bool),
        (energy_kw < 0).to_numpy(bool),
    ]
    reason = np.select(conditions, REASONS, default="")
    keep = ~collapsed
    ok = keep & (reason == "")
    cleansed = pd.DataFrame(
        {
            "meter_id": meter[ok],
            "reading_ts": ts[ok],
            "energy_kw": energy_kw.where(~is_missing)[ok],
            "is_missing": is_missing[ok],
            "source_file": df["source_file"][ok],
            "line_number": df["line_number"][ok].astype("int64"),
        }
    ).reset_index(drop=True)
    bad = keep & (reason != "")
    quarantined = df.loc[bad, [*REQUIRED]].assign(
        reason=reason[bad], source_file=df["source_file"][bad], line_number=df["line_number"][bad]
    )
    return cleansed, quarantined, int(collapsed.sum())


def flag(cleansed: pd.DataFrame, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rules 4 (anomalies) and 5 (faulty meters) plus enrichment: (flagged rows, faulty periods)."""
    df = cleansed.copy()
    df["is_anomaly"] = (df["energy_kw"] > config.max_kw).fillna(False)

    present = df.loc[~df["is_missing"], ["meter_id", "reading_ts", "energy_kw", "is_anomaly"]]
    present = present.sort_values(["meter_id", "reading_ts"])
    near = (present["energy_kw"] <= config.near_zero_kw) & ~present["is_anomaly"]
    new_run = (near != near.shift()) | (present["meter_id"] != present["meter_id"].shift())
    zero = present[near].assign(run_id=new_run.cumsum()[near])
    runs = zero.groupby("run_id").agg(
        meter_id=("meter_id", "first"),
        start_ts=("reading_ts", "min"),
        end_ts=("reading_ts", "max"),
        readings=("reading_ts", "size"),
    )
    runs = runs[(runs["end_ts"] - runs["start_ts"]) >= pd.Timedelta(hours=config.min_zero_hours)]
    df["is_faulty"] = False
    df.loc[zero.index[zero["run_id"].isin(runs.index)], "is_faulty"] = True

    local = df["reading_ts"].dt.tz_convert(config.timezone)
    hour = local.dt.hour
    df["local_date"] = local.dt.tz_localize(None).dt.normalize()
    df["local_hour"] = hour.astype("int8")
    df["is_peak_period"] = (
        (hour >= config.peak_start_hour)
        & (hour < config.peak_end_hour)
        & (local.dt.dayofweek + 1).isin(config.peak_weekdays)
    )
    periods = runs.sort_values(["meter_id", "start_ts"]).reset_index(drop=True)
    return df, periods


def counts(cleansed: pd.DataFrame, quarantined: pd.DataFrame, collapsed: int, flagged, periods) -> dict:
    """The figures the benchmark compares with the polars rule book's, to show both agree."""
    return {
        "kept": len(cleansed),
        "quarantined": len(quarantined),
        "collapsed": collapsed,
        "missing": int(flagged["is_missing"].sum()),
        "anomalies": int(flagged["is_anomaly"].sum()),
        "faulty_readings": int(flagged["is_faulty"].sum()),
        "faulty_periods": len(periods),
        "peak_period_rows": int(flagged["is_peak_period"].sum()),
        "reasons": {k: int(v) for k, v in quarantined["reason"].value_counts().sort_index().items()},
    }
