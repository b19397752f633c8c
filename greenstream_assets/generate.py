"""Realistic synthetic meter files with defects injected at known rates (vectorized, no row loops)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from greenstream_assets.storage.blobs import BlobStore


@dataclass(frozen=True)
class Defects:
    w_units: float = 0.05  # share of rows sent in W instead of kW
    nulls: float = 0.01  # empty energy_value
    duplicates: float = 0.005  # rows sent twice
    negatives: float = 0.002
    spikes: float = 0.001  # values above the anomaly threshold
    unknown_units: float = 0.002  # e.g. "kWh", "kw", ""
    stuck_meters: float = 0.01  # share of meters stuck at zero for a whole day
    broken_files: int = 1  # unreadable files per day


NO_DEFECTS = Defects(0, 0, 0, 0, 0, 0, 0, 0)


def readings_frame(
    meters: int, day: date, interval_minutes: int, defects: Defects, seed: int
) -> pl.DataFrame:
    """One day of readings for ``meters`` meters: meter_id, timestamp, energy_value, energy_unit."""
    rng = np.random.default_rng(seed)
    per_day = 24 * 60 // interval_minutes
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    minutes = np.arange(per_day) * interval_minutes
    hour = minutes / 60.0
    # Household shape: low at night, a morning bump and an evening peak around 19:00.
    shape = 0.35 + 0.4 * np.exp(-((hour - 8) ** 2) / 4) + 0.9 * np.exp(-((hour - 19) ** 2) / 5)
    base = rng.uniform(0.4, 3.0, meters)
    kw = (base[:, None] * shape[None, :]) * rng.lognormal(0.0, 0.15, (meters, per_day))
    stuck = rng.random(meters) < defects.stuck_meters
    kw[stuck, :] = 0.0
    kw = kw.ravel()
    n = kw.size
    unit = np.full(n, "kW", dtype=object)
    value = np.round(kw, 4)
    w = rng.random(n) < defects.w_units
    value = np.where(w, np.round(kw * 1000, 1), value)
    unit[w] = "W"
    value = np.where(rng.random(n) < defects.negatives, -np.abs(value) - 0.1, value)
    # A spike is 150-900 kW, written in the row's unit (kW, or W x 1000): in W it is still above
    # the anomaly threshold, so the configured rate is the rate of anomalies.
    spike = rng.random(n) < defects.spikes
    spike_kw = rng.uniform(150, 900, n)
    value = np.where(spike, np.where(w, np.round(spike_kw * 1000, 1), spike_kw), value)
    bad_unit = rng.random(n) < defects.unknown_units
    unit[bad_unit] = rng.choice(np.array(["kWh", "kw", "", "MW"], dtype=object), int(bad_unit.sum()))
    text = pl.Series(value).cast(pl.String)
    nulls = pl.Series(rng.random(n) < defects.nulls)
    frame = pl.DataFrame(
        {
            "meter_id": np.repeat([f"MTR{i:06d}" for i in range(meters)], per_day),
            "timestamp": np.tile(
                [(start + timedelta(minutes=int(m))).strftime("%Y-%m-%dT%H:%M:%SZ") for m in minutes], meters
            ),
            "energy_value": pl.select(pl.when(nulls).then(None).otherwise(text)).to_series(),
            "energy_unit": unit.astype(str),
        }
    )
    dupes = frame.filter(pl.Series(rng.random(n) < defects.duplicates))
    return pl.concat([frame, dupes])


def write_day(
    store: BlobStore,
    meters: int,
    day: date,
    interval_minutes: int = 15,
    layout: str = "batch",
    defects: Defects = Defects(),
    seed: int = 0,
) -> list[str]:
    """Write a day's files into ``store``; ``layout`` is ``batch`` (24 hourly files) or ``per-meter``."""
    frame = readings_frame(meters, day, interval_minutes, defects, seed)
    prefix = day.isoformat()
    keys = []
    if layout == "batch":
        parts = frame.with_columns(hour=pl.col("timestamp").str.slice(11, 2)).partition_by(
            "hour", as_dict=True, include_key=False
        )
        for (hour,), part in sorted(parts.items()):
            keys.append(f"{prefix}/batch-{prefix}T{hour}.csv")
            store.write(keys[-1], part.write_csv().encode())
    elif layout == "per-meter":
        for (meter,), part in sorted(frame.partition_by("meter_id", as_dict=True).items()):
            keys.append(f"{prefix}/{meter}.csv")
            store.write(keys[-1], part.write_csv().encode())
    else:
        raise ValueError(f"unknown layout {layout!r}: use batch or per-meter")
    rng = np.random.default_rng(seed + 1)
    for i in range(defects.broken_files):
        kind = i % 3
        keys.append(f"{prefix}/broken-{i}.csv")
        if kind == 0:
            store.write(keys[-1], rng.bytes(512))  # binary garbage
        elif kind == 1:
            store.write(keys[-1], b"meter_id,timestamp,energy_value\nMTR000001,2024-01-01T00:00:00Z,1.0\n")
        else:
            store.write(
                keys[-1], "meter_id,timestamp,energy_value,energy_unit\nZ\xe4hler,x,1,kW\n".encode("latin-1")
            )
    return keys
