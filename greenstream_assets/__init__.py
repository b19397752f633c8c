"""GreenStream: smart-meter CSV files in, trusted readings, reports and forecasting data out.

``code_location`` (the Dagster ``Definitions``) is loaded on first access, so that importing the
pure rule modules (``greenstream_assets.rules``) never imports Dagster.
"""

import ctypes
import os
import sys

# Polars allocates through its own jemalloc. On import it sets a short page decay (dirty 500 ms,
# muzzy 1 s: freed memory goes back to the OS promptly, pola-rs/polars#18088) and appends any
# _RJEM_MALLOC_CONF found in the environment as an override, so this must run before polars loads.
# A day frees and reallocates a few hundred MB for every slice of meters; keeping freed pages for
# 10 s saves the page faults of taking them again. Measured on a 4.8M-row day: kernel time 4.3 ->
# 2.6 s, the day ~1 s faster, for ~250 MB more peak memory (README, "Benchmarks"). An operator's
# own setting wins.
ALLOCATOR_CONF = "dirty_decay_ms:10000,muzzy_decay_ms:10000"
os.environ.setdefault("_RJEM_MALLOC_CONF", ALLOCATOR_CONF)

# Transparent huge pages, where the kernel makes them for every large allocation ("always", as on
# this project's machines): each first touch of fresh memory by polars', Arrow's (mimalloc) and
# DuckDB's allocators zeroes a whole 2 MB page, and a day's steps take and free memory slice by
# slice. Turned off for this process and the processes it starts (prctl PR_SET_THP_DISABLE, Linux
# only): on a 4.8M-row day, kernel time 3.7-4.1 -> 2.4-3.0 s and the day 0.5-1.3 s faster, paired
# runs (README, "Benchmarks"). GREENSTREAM_KEEP_HUGE_PAGES=1 keeps the system's setting.
PR_SET_THP_DISABLE = 41


def _disable_transparent_huge_pages() -> bool:
    """Whether THP is now off for this process (False where prctl is missing or refuses). With
    GREENSTREAM_KEEP_HUGE_PAGES=1 the system's setting applies again, also where a parent turned
    THP off (the flag is inherited)."""
    if not sys.platform.startswith("linux"):
        return False
    off = os.environ.get("GREENSTREAM_KEEP_HUGE_PAGES") != "1"
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_THP_DISABLE, int(off), 0, 0, 0) == 0 and off
    except (OSError, AttributeError):
        return False


_disable_transparent_huge_pages()


def __getattr__(name: str):
    if name == "code_location":
        from greenstream_assets.definitions import defs

        return defs
    raise AttributeError(name)
