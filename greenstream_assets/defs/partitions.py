"""The one daily partitioning every per-day asset shares: the UTC day of a reading's timestamp."""

import dagster as dg

from greenstream_assets.rules.config import RulesConfig

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=RulesConfig().earliest_day.isoformat(), end_offset=1
)
