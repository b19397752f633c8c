"""Quality: the rules applied to a day. Valid readings go on, the rest to quarantine with a reason."""

import dagster as dg
import polars as pl

from greenstream_assets.defs.checks import CLEANSED_SCHEMA, ROWS_CONSERVED, SchemaCheck, daily_check
from greenstream_assets.defs.common import IO_RETRY, Preview, daily_asset, partition_day
from greenstream_assets.defs.partitions import daily_partitions
from greenstream_assets.defs.resources import RulesResource, StorageResource
from greenstream_assets.rules.flagging import flag_readings
from greenstream_assets.rules.validation import REASONS, validate_readings
from greenstream_assets.schemas import CleansedReadings
from greenstream_assets.storage import lake

CLEANSED = dg.AssetKey("cleansed_readings")
QUARANTINED = dg.AssetKey("quarantined_readings")


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CLEANSED,
            deps=["raw_meter_files"],
            group_name="quality",
            kinds={"polars", "parquet"},
            description=(
                "Readings that passed the rules: units converted to kW (W / 1000), one row per meter "
                "and instant (rows sent twice collapsed), missing values kept and marked is_missing."
            ),
        ),
        dg.AssetSpec(
            QUARANTINED,
            deps=["raw_meter_files"],
            group_name="quality",
            kinds={"json"},
            description=(
                "Rejected rows for review, never lost: the original fields plus reason, source_file "
                "and line_number, as JSON Lines under the lake's quarantine/."
            ),
        ),
    ],
    partitions_def=daily_partitions,
    retry_policy=IO_RETRY,
    check_specs=[
        daily_check(CLEANSED_SCHEMA, CLEANSED, blocking=True, description=CleansedReadings.__doc__),
        daily_check(
            ROWS_CONSERVED,
            CLEANSED,
            blocking=True,
            description=(
                "Every raw row of the day is kept, quarantined or collapsed as a duplicate: "
                "in = kept + quarantined + collapsed."
            ),
        ),
    ],
)
def validate_day(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    day = partition_day(context)
    store = storage.lake_store()
    config = rules.config()
    check = SchemaCheck(CleansedReadings)
    rows_in = collapsed = missing = 0
    counts = dict.fromkeys(REASONS, 0)
    kept_head, quarantined_head = Preview(), Preview()
    # A slice of meters at a time (see lake.meter_slice): a meter's rows, and so its duplicates,
    # always share a slice.
    with (
        lake.read_slices(store, lake.layer_key("raw_meter_files", day)) as slices,
        lake.SliceWriter(store, lake.layer_key("cleansed_readings", day)) as cleansed,
        lake.JsonLinesWriter(store, lake.quarantine_key(day)) as quarantined,
        # Two slices validated at once, their results taken in slice order.
        lake.mapped(lambda raw: validate_readings(raw, config, day), slices) as results,
    ):
        for result in results:
            cleansed.write(result.cleansed)
            quarantined.write(result.quarantined)
            check.add(result.cleansed)
            rows_in += result.rows_in
            collapsed += result.collapsed_rows
            missing += int(result.cleansed.get_column("is_missing").sum())
            for reason, n in result.reason_counts().items():
                counts[reason] += n
            kept_head.add(result.cleansed)
            quarantined_head.add(result.quarantined)
    lake.write_json(
        store,
        lake.validation_stats_key(day),
        {"rows_in": rows_in, "rows_collapsed": collapsed, "reasons": counts},
    )
    yield dg.MaterializeResult(
        asset_key=CLEANSED,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(cleansed.rows),
            "rows_in": dg.MetadataValue.int(rows_in),
            "rows_collapsed": dg.MetadataValue.int(collapsed),
            "missing_values": dg.MetadataValue.int(missing),
            "preview": kept_head.value(),
        },
    )
    yield dg.MaterializeResult(
        asset_key=QUARANTINED,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(quarantined.rows),
            **{f"reason_{reason}": dg.MetadataValue.int(n) for reason, n in counts.items()},
            "location": dg.MetadataValue.path(lake.quarantine_key(day)),
            "preview": quarantined_head.value(),
        },
    )
    yield check.result(CLEANSED_SCHEMA, CLEANSED)
    accounted = cleansed.rows + quarantined.rows + collapsed
    yield dg.AssetCheckResult(
        check_name=ROWS_CONSERVED,
        asset_key=CLEANSED,
        passed=accounted == rows_in,
        metadata={
            "rows_in": rows_in,
            "rows_kept": cleansed.rows,
            "rows_quarantined": quarantined.rows,
            "rows_collapsed": collapsed,
            "unaccounted": rows_in - accounted,
        },
    )


@daily_asset(
    group_name="quality",
    deps=[CLEANSED],
    kinds={"polars", "parquet"},
)
def flagged_anomalies(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """The day's cleansed readings with their flags: is_anomaly (above the maximum kW, kept but out of
    every peak), is_faulty (inside a run at or near zero long enough to call the meter faulty), and the
    local date, hour and peak-period flag. The faulty periods found are kept beside them."""
    day = partition_day(context)
    store = storage.lake_store()
    config = rules.config()
    periods, anomalies, faulty_readings, anomaly_sample = [], 0, 0, Preview()
    with (
        lake.read_slices(store, lake.layer_key("cleansed_readings", day)) as slices,
        lake.SliceWriter(store, lake.layer_key("flagged_anomalies", day)) as out,
        lake.mapped(lambda cleansed: flag_readings(cleansed, config), slices) as results,
    ):
        for flagged, found in results:
            out.write(flagged)
            periods.append(found)
            anomalies += int(flagged.get_column("is_anomaly").sum())
            faulty_readings += int(flagged.get_column("is_faulty").sum())
            anomaly_sample.add(flagged.filter(pl.col("is_anomaly")))
    all_periods = pl.concat(periods).sort("meter_id", "start_ts")
    lake.write_layer(store, lake.layer_key("faulty_periods", day), all_periods)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(out.rows),
            "anomalies": dg.MetadataValue.int(anomalies),
            "faulty_readings": dg.MetadataValue.int(faulty_readings),
            "faulty_meters": dg.MetadataValue.int(all_periods.get_column("meter_id").n_unique()),
            "anomaly_sample": anomaly_sample.value(),
        }
    )
