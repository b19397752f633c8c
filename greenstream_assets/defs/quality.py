"""Quality: the rules applied to a day. Valid readings go on, the rest to quarantine with a reason."""

import dagster as dg
import polars as pl

from greenstream_assets.defs.checks import CLEANSED_SCHEMA, ROWS_CONSERVED, daily_check, schema_check_result
from greenstream_assets.defs.common import IO_RETRY, daily_asset, partition_day, preview
from greenstream_assets.defs.partitions import daily_partitions
from greenstream_assets.defs.resources import RulesResource, StorageResource
from greenstream_assets.rules.flagging import flag_readings
from greenstream_assets.rules.validation import validate_readings
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
    raw = lake.read_parquet(store, lake.layer_key("raw_meter_files", day))
    result = validate_readings(raw, rules.config(), day)
    lake.write_layer(store, lake.layer_key("cleansed_readings", day), result.cleansed)
    lake.write_jsonl(store, lake.quarantine_key(day), result.quarantined)
    counts = result.reason_counts()
    lake.write_json(
        store,
        lake.validation_stats_key(day),
        {"rows_in": result.rows_in, "rows_collapsed": result.collapsed_rows, "reasons": counts},
    )
    yield dg.MaterializeResult(
        asset_key=CLEANSED,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.cleansed.height),
            "rows_in": dg.MetadataValue.int(result.rows_in),
            "rows_collapsed": dg.MetadataValue.int(result.collapsed_rows),
            "missing_values": dg.MetadataValue.int(int(result.cleansed.get_column("is_missing").sum())),
            "preview": preview(result.cleansed),
        },
    )
    yield dg.MaterializeResult(
        asset_key=QUARANTINED,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.quarantined.height),
            **{f"reason_{reason}": dg.MetadataValue.int(n) for reason, n in counts.items()},
            "location": dg.MetadataValue.path(lake.quarantine_key(day)),
            "preview": preview(result.quarantined),
        },
    )
    yield schema_check_result(CLEANSED_SCHEMA, CLEANSED, CleansedReadings, result.cleansed)
    accounted = result.cleansed.height + result.quarantined.height + result.collapsed_rows
    yield dg.AssetCheckResult(
        check_name=ROWS_CONSERVED,
        asset_key=CLEANSED,
        passed=accounted == result.rows_in,
        metadata={
            "rows_in": result.rows_in,
            "rows_kept": result.cleansed.height,
            "rows_quarantined": result.quarantined.height,
            "rows_collapsed": result.collapsed_rows,
            "unaccounted": result.rows_in - accounted,
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
    cleansed = lake.read_parquet(store, lake.layer_key("cleansed_readings", day))
    flagged, periods = flag_readings(cleansed, rules.config())
    lake.write_layer(store, lake.layer_key("flagged_anomalies", day), flagged)
    lake.write_layer(store, lake.layer_key("faulty_periods", day), periods)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(flagged.height),
            "anomalies": dg.MetadataValue.int(int(flagged.get_column("is_anomaly").sum())),
            "faulty_readings": dg.MetadataValue.int(int(flagged.get_column("is_faulty").sum())),
            "faulty_meters": dg.MetadataValue.int(periods.get_column("meter_id").n_unique()),
            "anomaly_sample": preview(flagged.filter(pl.col("is_anomaly"))),
        }
    )
