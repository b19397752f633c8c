"""Rules 1 and 2: units to kW, missing-value tokens, numbers."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.units import (
    MISSING_TOKENS,
    kw_value,
    unit_columns,
    unit_factor,
    value_columns,
    value_is_missing,
    value_number,
)
from greenstream_assets.rules.validation import validate_readings

from .helpers import DAY, raw_frame

T = "2024-06-03T08:00:00Z"


def apply(expr_fn, values: list[str | None]) -> list:
    frame = pl.DataFrame({"v": values}, schema={"v": pl.String})
    return frame.select(out=expr_fn(pl.col("v"))).get_column("out").to_list()


def test_default_unit_factors() -> None:
    assert RulesConfig().unit_factors == {"W": 0.001, "kW": 1.0}


@pytest.mark.parametrize(
    ("unit", "factor"),
    [
        ("W", 0.001),
        ("kW", 1.0),
        (" kW ", 1.0),
        ("\tW ", 0.001),
        ("kw", None),
        ("KW", None),
        ("Kw", None),
        ("w", None),
        ("kWh", None),
        ("MW", None),
        ("", None),
        ("  ", None),
        (None, None),
    ],
)
def test_unit_factor(unit: str | None, factor: float | None) -> None:
    assert apply(lambda u: unit_factor(u, RulesConfig().unit_factors), [unit]) == [factor]


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "null", "NULL", "Null", "none", "None", "NONE", "na", "NA", "n/a", "N/A", "nan", "NaN"]
    + ["NAN", " NaN ", " null "],
)
def test_missing_tokens(value: str | None) -> None:
    assert apply(value_is_missing, [value]) == [True]


@pytest.mark.parametrize("value", ["0", "1.5", "-1", "abc", "n", "a", "nul", "nana", "0.0"])
def test_not_missing(value: str) -> None:
    assert apply(value_is_missing, [value]) == [False]


def test_missing_tokens_constant() -> None:
    assert set(MISSING_TOKENS) == {"", "null", "none", "na", "n/a", "nan"}


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("1.5", 1.5),
        ("1.50", 1.5),
        (" 2 ", 2.0),
        ("-3", -3.0),
        ("0", 0.0),
        ("1e3", 1000.0),
        ("100001", 100001.0),
        ("abc", None),
        ("1,5", None),
        ("NaN", None),
        ("inf", None),
        ("-inf", None),
        ("", None),
        (None, None),
    ],
)
def test_value_number(value: str | None, number: float | None) -> None:
    assert apply(value_number, [value]) == [number]


@pytest.mark.parametrize(
    ("value", "unit", "kw"),
    [
        ("1500", "W", 1.5),
        ("1", "W", 0.001),
        ("250", " W ", 0.25),
        ("100000", "W", 100.0),
        ("2.5", "kW", 2.5),
        (" 7 ", " kW ", 7.0),
        ("0", "kW", 0.0),
        ("0", "W", 0.0),
        ("1e2", "kW", 100.0),
    ],
)
def test_energy_kw_after_validation(value: str, unit: str, kw: float) -> None:
    result = validate_readings(raw_frame([("m1", T, value, unit)]), RulesConfig(), DAY)
    assert result.quarantined.height == 0
    assert result.cleansed.get_column("energy_kw").to_list() == [pytest.approx(kw, rel=1e-12)]
    assert result.cleansed.get_column("is_missing").to_list() == [False]


@pytest.mark.parametrize("unit", ["kw", "KW", "w", "kWh", "MW", "", "   ", None])
@pytest.mark.parametrize("value", ["1.5", "", None])
def test_invalid_unit_is_quarantined(unit: str | None, value: str | None) -> None:
    result = validate_readings(raw_frame([("m1", T, value, unit)]), RulesConfig(), DAY)
    assert result.cleansed.height == 0
    assert result.quarantined.get_column("reason").to_list() == ["invalid_unit"]


@pytest.mark.parametrize("watts", [9, 13, 18, 26, 1, 3, 1234, 99999, 100001, 123456, 2.5, 0.5])
def test_watts_are_divided_by_1000_exactly(watts: float) -> None:
    # W -> value / 1000: the double nearest the quotient, not value * 0.001 (9 W would be
    # 0.009000000000000001 kW, and one whole number of watts in eight is off like this).
    result = validate_readings(raw_frame([("m1", T, str(watts), "W")]), RulesConfig(), DAY)
    assert result.cleansed.get_column("energy_kw").to_list() == [watts / 1000]


def test_kw_value_multiplies_other_factors() -> None:
    frame = pl.DataFrame({"n": [9.0, 0.05, 2.0, None], "f": [0.001, 1000.0, 1.0, 0.001]})
    assert frame.select(kw_value(pl.col("n"), pl.col("f"))).to_series().to_list() == [0.009, 50.0, 2.0, None]
    # A factor whose reciprocal is no whole number multiplies.
    assert pl.select(kw_value(pl.lit(3.0), pl.lit(0.3))).item() == 3.0 * 0.3


def test_custom_unit_factors() -> None:
    config = RulesConfig(unit_factors={"W": 0.001, "kW": 1.0, "MW": 1000.0})
    result = validate_readings(raw_frame([("m1", T, "0.05", "MW")]), config, DAY)
    assert result.cleansed.get_column("energy_kw").to_list() == [pytest.approx(50.0)]


VALUES = [
    *("", "   ", "null", "NULL", " NaN ", " null ", "n/a", "N/A", "nan", "inf", "-inf", "+inf", "Infinity"),
    *("0", "-0", " -0.0 ", "1.5", "1.50", " 2 ", "-3", "1e3", "1E-2", ".5", "+1", "abc", "1,5", "nana", None),
]


def assert_value_columns_agree(texts: list[str | None]) -> tuple[list, list]:
    """value_columns gives, row by row, what the expressions value_is_missing and value_number give."""
    values = pl.Series("energy_value", texts, dtype=pl.String)
    is_missing, number = value_columns(values)
    frame = values.to_frame().select(
        m=value_is_missing(pl.col("energy_value")), n=value_number(pl.col("energy_value"))
    )
    assert is_missing.to_list() == frame.get_column("m").to_list()
    assert number.to_list() == frame.get_column("n").to_list()
    assert (is_missing.name, number.name) == ("is_missing", "value_num")
    return is_missing.to_list(), number.to_list()


def test_value_columns_agree_with_the_rules_row_by_row() -> None:
    is_missing, number = assert_value_columns_agree(VALUES)
    assert [v for v, m in zip(VALUES, is_missing, strict=True) if m] == [
        *("", "   ", "null", "NULL", " NaN ", " null ", "n/a", "N/A", "nan", None),
    ]
    assert number[VALUES.index("-0")] == 0.0 and str(number[VALUES.index(" -0.0 ")]) == "0.0"
    assert number[VALUES.index(" 2 ")] == 2.0 and number[VALUES.index("inf")] is None


@given(st.lists(st.one_of(st.none(), st.text(max_size=8), st.floats().map(str)), max_size=40))
def test_value_columns_agree_with_the_rules_for_any_text(texts: list[str | None]) -> None:
    assert_value_columns_agree(texts)


def test_unit_columns_work_each_distinct_unit_out_once_with_the_same_result() -> None:
    units = pl.Series(
        "energy_unit", ["kW", " W", "kw", None, "", "kW ", "W", "kWh", None, "kW"], dtype=pl.String
    )
    unit, factor = unit_columns(units, RulesConfig().unit_factors)
    assert unit.to_list() == ["kW", "W", "kw", None, "", "kW", "W", "kWh", None, "kW"]
    assert factor.to_list() == [1.0, 0.001, None, None, None, 1.0, 0.001, None, None, 1.0]
    assert (
        factor.to_list()
        == units.to_frame()
        .select(unit_factor(pl.col("energy_unit"), RulesConfig().unit_factors))
        .to_series()
        .to_list()
    )
    assert (unit.name, factor.name) == ("unit", "factor")
