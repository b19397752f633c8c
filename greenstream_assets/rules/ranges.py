"""Rule 4 (upper half): values above the maximum are kept but flagged; negatives are in validation."""

from __future__ import annotations

import polars as pl

from greenstream_assets.rules.config import RulesConfig


def is_anomaly(config: RulesConfig) -> pl.Expr:
    """True where ``energy_kw`` is above ``max_kw``; never true for a missing value."""
    return (pl.col("energy_kw") > config.max_kw).fill_null(False)
