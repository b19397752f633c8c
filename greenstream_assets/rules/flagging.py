"""Rules 4 (anomalies) and 5 (faulty meters) plus enrichment, applied to one day's cleansed rows."""

from __future__ import annotations

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.enrichment import enrich
from greenstream_assets.rules.faulty import flag_faulty
from greenstream_assets.rules.ranges import is_anomaly


def flag_readings(
    cleansed: pl.DataFrame, config: RulesConfig, earlier: pl.DataFrame | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the readings with ``is_anomaly``, ``is_faulty`` and enrichment, and faulty periods.
    ``earlier``: the previous day's flagged readings of the meters that may have been stuck at its
    end (see ``flag_faulty``), or None."""
    flagged = cleansed.with_columns(is_anomaly(config).alias("is_anomaly"))
    flagged, periods = flag_faulty(flagged, config, earlier)
    return enrich(flagged, config), periods
