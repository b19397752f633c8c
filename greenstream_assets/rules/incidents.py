"""Faulty-meter incidents: one per meter and stuck period, followed across days.

Each day's incidents are stored per day (warehouse table ``faulty_incident_days``); the registry
view ``faulty_meter_incidents`` keeps each incident's latest state (storage/warehouse.py), so
re-running a day never duplicates an incident.

A stuck period is rule 5's run (``rules.faulty``): consecutive non-missing readings at or below
``near_zero_kw`` that are not anomalies, missing readings skipped; it is an incident once its last
reading is at least ``min_zero_hours`` after its first. A day's computation reads the previous
day's tail, so a run across midnight is one incident with its true start, and an incident open at
the end of the previous day is continued or closed.

- ``start_ts``: the first near-zero reading of the run, found in the previous day's tail; when the
  tail is near zero back to its beginning, the start of the previous day's open incident.
- ``last_zero_ts``: the run's last near-zero reading so far.
- ``status``: ``open`` while no reading above the threshold has followed the run (trailing missing
  readings keep it open: they do not break a run), ``closed`` once one has.
- ``end_ts``: the last near-zero reading of a closed incident (the stuck period's end, as in
  ``rules.faulty``); null while open.
- ``duration_hours``: ``last_zero_ts - start_ts``, the measure rule 5 compares with
  ``min_zero_hours``; for an open incident, the duration so far.
- ``readings``: near-zero readings in the run, across days.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.faulty import near_zero, run_starts
from greenstream_assets.rules.timestamps import instants_overlap

OPEN = "open"
CLOSED = "closed"
KEY = ("meter_id", "start_ts")
INCIDENT_SCHEMA = {
    "meter_id": pl.String,
    "start_ts": pl.Datetime("us", "UTC"),
    "end_ts": pl.Datetime("us", "UTC"),
    "last_zero_ts": pl.Datetime("us", "UTC"),
    "duration_hours": pl.Float64,
    "status": pl.String,
    "readings": pl.UInt32,
}

READING_COLUMNS = ("meter_id", "reading_ts", "energy_kw", "is_missing", "is_anomaly")
READING_SCHEMA = {
    "meter_id": pl.String,
    "reading_ts": pl.Datetime("us", "UTC"),
    "energy_kw": pl.Float64,
    "is_missing": pl.Boolean,
    "is_anomaly": pl.Boolean,
}


def stuck_reading(config: RulesConfig) -> pl.Expr:
    """A reading that can be part of a stuck period: sent (not missing, with a value) and near zero."""
    return ~pl.col("is_missing") & pl.col("energy_kw").is_not_null() & near_zero(config)


def tail_of_stuck_meters(previous_day: pl.LazyFrame, config: RulesConfig) -> pl.DataFrame:
    """The rows of ``previous_day`` (columns ``READING_COLUMNS``) that ``day_incidents`` can use as
    its tail: those of the meters with a ``stuck_reading`` in it, usually a few hundred of 50,000.

    A meter without one has no incident to report from the tail, and its tail rows change nothing
    for its runs of the day: an incident it left open yesterday ran to the end of the day with no
    reading sent after it (any sent reading is either near zero or a recovery), and its earlier
    runs above the threshold never open or continue one. So ``day_incidents`` gives the same
    result on this tail as on the whole day (tested), read in two passes that decode the few
    columns of the filter first."""
    stuck = previous_day.filter(stuck_reading(config)).select("meter_id").unique().collect()
    return (
        previous_day.select(READING_COLUMNS)
        .filter(pl.col("meter_id").is_in(stuck.get_column("meter_id").implode()))
        .collect()
        .cast(READING_SCHEMA)
    )


def _previous_open(previous_open_incidents: pl.DataFrame | None) -> pl.DataFrame:
    """Per meter: start, last near-zero reading and reading count of its incident open yesterday."""
    schema = {
        "meter_id": pl.String,
        "_prev_start": pl.Datetime("us", "UTC"),
        "_prev_last_zero": pl.Datetime("us", "UTC"),
        "_prev_readings": pl.UInt32,
    }
    if previous_open_incidents is None:
        return pl.DataFrame(schema=schema)
    frame = previous_open_incidents
    if "status" in frame.columns:
        frame = frame.filter(pl.col("status") == OPEN)
    return (
        frame.sort("start_ts")
        .unique("meter_id", keep="last")
        .select(
            "meter_id",
            _prev_start="start_ts",
            _prev_last_zero="last_zero_ts",
            _prev_readings="readings",
        )
        .cast(schema)
    )


def day_incidents(
    previous_tail: pl.DataFrame,
    readings: pl.DataFrame,
    config: RulesConfig,
    previous_open_incidents: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The incidents the day's readings open, continue or close (columns ``INCIDENT_SCHEMA``).

    ``readings``: the day's flagged readings. ``previous_tail``: the previous day's readings (all
    of them: with missing readings in a run, a run that is not yet an incident can start anywhere
    in the day), or of them ``tail_of_stuck_meters``; rows that ``readings`` also holds are
    ignored. ``previous_open_incidents``: the previous day's ``day_incidents`` output (rows not
    ``open`` are ignored), needed only for an incident that began before the tail. Both frames need
    ``meter_id``, ``reading_ts``, ``energy_kw``, ``is_missing``, ``is_anomaly``.

    Reported: every incident with a near-zero reading on the day, and one that ran to the end of
    the tail and is closed by the day's first reading above the threshold. An incident that began
    and closed within the tail was the previous day's and is not repeated.
    """
    today = readings.select(READING_COLUMNS).cast(READING_SCHEMA)
    tail = previous_tail.select(READING_COLUMNS).cast(READING_SCHEMA)
    previous = _previous_open(previous_open_incidents)
    # Only a meter with a near-zero reading (today or in the tail) or an incident left open can
    # have one to report, and every step below works meter by meter: the other meters' rows, all
    # but a few hundred meters' of a day, are dropped first (one pass, not five).
    possible = pl.concat(
        [
            today.filter(stuck_reading(config)).get_column("meter_id"),
            tail.filter(stuck_reading(config)).get_column("meter_id"),
            previous.get_column("meter_id"),
        ]
    ).unique()
    today = today.filter(pl.col("meter_id").is_in(possible.implode())).with_columns(_today=pl.lit(True))
    # The previous day's rows share no instant with today's (the usual case): nothing to drop, so
    # no join. Otherwise today's rows win.
    if instants_overlap(tail, today):
        tail = tail.join(today, on=["meter_id", "reading_ts"], how="anti")
    tail = tail.with_columns(_today=pl.lit(False))
    near = near_zero(config)
    new_run = run_starts(near)
    sent = pl.concat([tail, today]).filter(~pl.col("is_missing") & pl.col("energy_kw").is_not_null())
    if previous.height:
        # An incident left open whose readings are not in the window (the meter sent only missing
        # values, or nothing, on the tail's day) is still followed: its last near-zero reading
        # stands in for it, so that today's first reading above the threshold closes it.
        # Checked against those meters' rows only: a few hundred of a slice's 500,000.
        theirs = sent.filter(pl.col("meter_id").is_in(previous.get_column("meter_id").implode()))
        stand_ins = (
            previous.select("meter_id", reading_ts="_prev_last_zero")
            .join(theirs.select("meter_id", "reading_ts"), on=["meter_id", "reading_ts"], how="anti")
            .with_columns(energy_kw=pl.lit(0.0), is_missing=pl.lit(False), is_anomaly=pl.lit(False))
            .cast(READING_SCHEMA)
            .with_columns(_today=pl.lit(False))
        )
        sent = pl.concat([stand_ins, sent])
    # Only meters with a reading near zero (today or in the tail) can have an incident to report.
    candidates = sent.filter(stuck_reading(config)).get_column("meter_id").unique()
    rows = (
        sent.filter(pl.col("meter_id").is_in(candidates.implode()))
        .sort("meter_id", "reading_ts")
        .with_columns(near=near, run_id=new_run.cum_sum())
        .join(previous, on="meter_id", how="left")
    )
    same_meter_next = pl.col("meter_id") == pl.col("meter_id").shift(-1)
    runs = (
        rows.group_by("run_id")
        .agg(
            pl.col("meter_id").first(),
            pl.col("near").first(),
            pl.col("_prev_start").first(),
            pl.col("_prev_readings").first(),
            start_ts=pl.col("reading_ts").min(),
            last_zero_ts=pl.col("reading_ts").max(),
            readings=pl.len(),
            # Rows of the run after yesterday's open incident's last reading: today's additions.
            _after_prev=(pl.col("reading_ts") > pl.col("_prev_last_zero")).sum(),
            _first_today=pl.col("_today").sort_by("reading_ts").first(),
        )
        .sort("run_id")
        .with_columns(
            _first_run=(pl.col("meter_id") != pl.col("meter_id").shift(1)).fill_null(True),
            # A near-zero run's next run is the meter's recovery; null when nothing followed it.
            _recovered_today=pl.when(same_meter_next).then(pl.col("_first_today").shift(-1)),
        )
        .filter(pl.col("near"))
    )
    # A run that starts the window continues yesterday's open incident: missing readings in between
    # do not break a run, and an open incident means no recovery was seen before the tail.
    continues = (
        pl.col("_first_run")
        & pl.col("_prev_start").is_not_null()
        & (pl.col("_prev_start") <= pl.col("start_ts"))
    )
    runs = runs.with_columns(
        start_ts=pl.when(continues).then("_prev_start").otherwise("start_ts"),
        readings=pl.when(continues)
        .then(pl.col("_prev_readings") + pl.col("_after_prev"))
        .otherwise("readings"),
    )
    recovered = pl.col("_recovered_today").is_not_null()
    duration = pl.col("last_zero_ts") - pl.col("start_ts")
    return (
        runs.filter(duration >= timedelta(hours=config.min_zero_hours))
        .filter(~recovered | pl.col("_recovered_today"))
        .select(
            "meter_id",
            "start_ts",
            end_ts=pl.when(recovered).then("last_zero_ts"),
            last_zero_ts="last_zero_ts",
            duration_hours=duration.dt.total_microseconds() / 3_600_000_000,
            status=pl.when(recovered).then(pl.lit(CLOSED)).otherwise(pl.lit(OPEN)),
            readings="readings",
        )
        .sort(*KEY)
        .cast(INCIDENT_SCHEMA)
    )
