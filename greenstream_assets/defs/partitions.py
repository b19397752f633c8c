"""The one daily partitioning every per-day asset shares: the UTC day of a reading's timestamp."""

import dagster as dg

from greenstream_assets.rules.config import RulesConfig

# Up to tomorrow (UTC): ingestion stages readings dated up to the day after they arrive (a meter's
# clock a little ahead, or local times east of UTC sent without a zone), so that day's partition must
# exist when the sensor asks for it. end_offset=1 ends at today's partition.
daily_partitions = dg.DailyPartitionsDefinition(
    start_date=RulesConfig().earliest_day.isoformat(), end_offset=2
)
