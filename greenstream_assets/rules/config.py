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
