"""The synthetic meter files: defects injected at the rates asked for."""

from datetime import date

import polars as pl
import pytest

from greenstream_assets.generate import NO_DEFECTS, Defects, readings_frame
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.validation import validate_readings

DAY = date(2024, 3, 4)


@pytest.mark.parametrize("w_units", [0.0, 0.5, 1.0])
def test_spikes_are_anomalies_at_the_rate_asked_in_any_unit(w_units: float) -> None:
    defects = Defects(**{**vars(NO_DEFECTS), "w_units": w_units, "spikes": 0.1})
    rows = readings_frame(200, DAY, 15, defects, seed=11)
    assert rows.height == 200 * 96
    units = rows.get_column("energy_unit").value_counts().sort("energy_unit")
    # In W, a spike is written x 1000: the same kW either way.
    kept = validate_readings(
        rows.with_columns(source_file=pl.lit("f.csv"), line_number=pl.int_range(2, rows.height + 2)),
        RulesConfig(),
        DAY,
    ).cleansed
    assert kept.height == rows.height
    spikes = kept.filter(pl.col("energy_kw") > RulesConfig().max_kw)
    # 10 % of 19,200 rows, give or take the draw (this seed: a fixed count).
    assert 1700 < spikes.height < 2140
    assert spikes.get_column("energy_kw").is_between(150, 900).all()
    # Nothing between the household loads and the spikes.
    assert kept.filter(pl.col("energy_kw").is_between(20, 150, closed="none")).height == 0
    if w_units == 1.0:
        assert units.rows() == [("W", rows.height)]
