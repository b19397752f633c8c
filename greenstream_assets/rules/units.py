"""Rules 1 and 2: energy values to kW, and which values count as missing."""

from __future__ import annotations

import polars as pl

# Text a meter sends for "no value". NaN is a missing value too, not a number to peak on.
MISSING_TOKENS = ("", "null", "none", "na", "n/a", "nan")


def value_is_missing(value: pl.Expr) -> pl.Expr:
    """True where ``energy_value`` (text) is NULL, empty, or a NULL/NaN token."""
    token = value.str.strip_chars().str.to_lowercase()
    return value.is_null() | token.is_in(MISSING_TOKENS)


def value_number(value: pl.Expr) -> pl.Expr:
    """``energy_value`` as a float; null where missing or not a finite number."""
    num = value.str.strip_chars().cast(pl.Float64, strict=False)
    # -0 is 0: the same reading, and never shown as "-0.0".
    return pl.when(num == 0).then(0.0).when(num.is_finite()).then(num).otherwise(None)


def value_columns(value: pl.Series) -> tuple[pl.Series, pl.Series]:
    """``value_is_missing`` and ``value_number`` of a whole column at once, the fast way.

    Nearly every value is a plain number: it is cast once, and only the few that do not cast to a
    finite number (spaces around them, tokens, junk) are stripped and looked at as text.
    """
    number = value.cast(pl.Float64, strict=False)
    odd = ((number.is_null() | ~number.is_finite()) & value.is_not_null()).arg_true()
    text = value.gather(odd).to_frame("v")
    fixed = text.select(
        missing=value_is_missing(pl.col("v")),
        number=pl.col("v").str.strip_chars().cast(pl.Float64, strict=False),
    )
    is_missing = value.is_null().scatter(odd, fixed.get_column("missing"))
    number = number.scatter(odd, fixed.get_column("number"))
    number = number.to_frame("n").select(
        # -0 is 0: the same reading, and never shown as "-0.0".
        pl.when(pl.col("n") == 0).then(0.0).when(pl.col("n").is_finite()).then(pl.col("n")).otherwise(None)
    )
    return is_missing.alias("is_missing"), number.to_series().alias("value_num")


def unit_factor(unit: pl.Expr, unit_factors: dict[str, float]) -> pl.Expr:
    """Factor from the unit to kW; null for any unit not in ``unit_factors`` (case matters)."""
    return unit.str.strip_chars().replace_strict(
        list(unit_factors), list(unit_factors.values()), default=None, return_dtype=pl.Float64
    )


def kw_value(number: pl.Expr, factor: pl.Expr) -> pl.Expr:
    """``number`` in kW, given its unit's ``factor``: W -> value / 1000, exactly as the rule says.

    A factor whose reciprocal is a whole number (0.001 for W) divides by that number, which gives
    the double nearest the true quotient (9 W -> 0.009 kW); multiplying by 0.001 is off in the last
    bit for about one whole number of watts in eight (9 * 0.001 = 0.009000000000000001). Other
    factors (1 for kW, 1000 for a configured MW) multiply.
    """
    divisor = 1.0 / factor
    divides = (factor < 1) & (divisor == divisor.round())
    return pl.when(divides).then(number / divisor).otherwise(number * factor)


def unit_columns(unit: pl.Series, unit_factors: dict[str, float]) -> tuple[pl.Series, pl.Series]:
    """``unit`` (the unit as sent, spaces stripped) and ``factor`` (``unit_factor``) of a whole
    column, worked out once per distinct unit: a day holds a handful of spellings."""
    distinct = pl.DataFrame({"energy_unit": unit.unique()}).with_columns(
        unit=pl.col("energy_unit").str.strip_chars(),
        factor=unit_factor(pl.col("energy_unit"), unit_factors),
    )
    both = unit.to_frame("energy_unit").join(
        distinct, on="energy_unit", how="left", nulls_equal=True, maintain_order="left"
    )
    return both.get_column("unit"), both.get_column("factor")
