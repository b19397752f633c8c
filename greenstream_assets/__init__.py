"""GreenStream: smart-meter CSV files in, trusted readings, reports and forecasting data out.

``code_location`` (the Dagster ``Definitions``) is loaded on first access, so that importing the
pure rule modules (``greenstream_assets.rules``) never imports Dagster.
"""

import os

# Polars allocates through its own jemalloc. On import it sets a short page decay (dirty 500 ms,
# muzzy 1 s: freed memory goes back to the OS promptly, pola-rs/polars#18088) and appends any
# _RJEM_MALLOC_CONF found in the environment as an override, so this must run before polars loads.
# A day frees and reallocates a few hundred MB for every slice of meters; keeping freed pages for
# 10 s saves the page faults of taking them again. Measured on a 4.8M-row day: kernel time 4.3 ->
# 2.6 s, the day ~1 s faster, for ~250 MB more peak memory (README, "Benchmarks"). An operator's
# own setting wins.
ALLOCATOR_CONF = "dirty_decay_ms:10000,muzzy_decay_ms:10000"
os.environ.setdefault("_RJEM_MALLOC_CONF", ALLOCATOR_CONF)


def __getattr__(name: str):
    if name == "code_location":
        from greenstream_assets.definitions import defs

        return defs
    raise AttributeError(name)
