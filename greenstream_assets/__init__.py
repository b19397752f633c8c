"""GreenStream: smart-meter CSV files in, trusted readings, reports and forecasting data out.

``code_location`` (the Dagster ``Definitions``) is loaded on first access, so that importing the
pure rule modules (``greenstream_assets.rules``) never imports Dagster.
"""


def __getattr__(name: str):
    if name == "code_location":
        from greenstream_assets.definitions import defs

        return defs
    raise AttributeError(name)
