"""Every threshold of the rule book in one typed, immutable config."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

REQUIRED_COLUMNS: tuple[str, ...] = ("meter_id", "timestamp", "energy_value", "energy_unit")


@dataclass(frozen=True)
class RulesConfig:
    # Rule 1: units. Factor converts a value in that unit to kW; anything else is invalid.
    unit_factors: dict[str, float] = field(default_factory=lambda: {"W": 0.001, "kW": 1.0})
    # Rule 3: a timestamp without an offset is local time in this zone.
    timezone: str = "UTC"
    # Meter ids longer than this, or with control characters (NUL...), are invalid: no real meter
    # has one, and a database index cannot hold an arbitrarily long key.
    max_meter_id_length: int = 128
    # Rule 4: values above this (kW) are kept but flagged as anomalies.
    max_kw: float = 100.0
    # Rule 5: at or below near_zero_kw for at least min_zero_hours -> faulty meter.
    near_zero_kw: float = 0.01
    min_zero_hours: float = 6.0
    # Enrichment: peak period [start, end) in local hours, on these ISO weekdays (1 = Monday).
    peak_start_hour: int = 17
    peak_end_hour: int = 21
    peak_weekdays: tuple[int, ...] = (1, 2, 3, 4, 5)
    # Readings dated outside [earliest_day, today + 1 day] are invalid (reason timestamp_out_of_range).
    earliest_day: date = date(2015, 1, 1)
    # Readings are nominally every interval_minutes; a reading's energy is kW x interval hours.
    interval_minutes: int = 15
    # Meter reports: how many meters the top-by-peak-demand list keeps.
    top_n_meters: int = 20
    # VEE: a gap of missing intervals this long or shorter (minutes) between two actual readings is
    # interpolated linearly; longer gaps are estimated from the same local weekday and time over
    # the previous history_weeks weeks.
    short_gap_minutes: int = 60
    history_weeks: int = 4
    # Features: local days flagged is_holiday.
    holidays: tuple[date, ...] = ()
    # Drift: a day's rate drifts above drift_factor x its trailing drift_window_days median; against
    # a zero median any rate above zero drifts, or, when min_drift_rate is set, a rate of at least it.
    drift_factor: float = 3.0
    drift_window_days: int = 14
    min_drift_rate: float = 0.0
