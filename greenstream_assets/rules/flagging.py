"""Rules 4 (anomalies) and 5 (faulty meters) plus enrichment, applied to one day's cleansed rows."""

from __future__ import annotations

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.enrichment import enrich
from greenstream_assets.rules.faulty import flag_faulty
from greenstream_assets.rules.ranges import is_anomaly


def flag_readings(cleansed: pl.DataFrame, config: RulesConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return the readings with ``is_anomaly``, ``is_faulty`` and enrichment, and faulty periods."""
    flagged = cleansed.with_columns(is_anomaly(config).alias("is_anomaly"))
    flagged, periods = flag_faulty(flagged, config)
    return enrich(flagged, config), periods
