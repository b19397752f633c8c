"""Quality: the day's raw rows through the rules in one pass. Valid readings go on with their
flags, the rest to quarantine with a reason."""

from contextlib import ExitStack
from datetime import date
from typing import Any

import dagster as dg
import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.defs.checks import (
    CLEANSED_SCHEMA,
    RAW_SCHEMA,
    ROWS_CONSERVED,
    SchemaCheck,
    daily_check,
)
from greenstream_assets.defs.common import IO_RETRY, Preview, partition_day, preview
from greenstream_assets.defs.partitions import daily_partitions
from greenstream_assets.defs.resources import RulesResource, StorageResource
from greenstream_assets.rules.flagging import flag_readings
from greenstream_assets.rules.validation import REASONS, validate_readings
from greenstream_assets.schemas import CleansedReadings, RawReadings
from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import BlobStore

RAW = dg.AssetKey("raw_meter_files")
CLEANSED = dg.AssetKey("cleansed_readings")
QUARANTINED = dg.AssetKey("quarantined_readings")
FLAGGED = dg.AssetKey("flagged_anomalies")


@dg.multi_asset(
    name="validate_day",
    specs=[
        dg.AssetSpec(
            RAW,
            deps=["landing_files"],
            group_name="ingestion",
            kinds={"polars", "parquet"},
            description=(
                "The day's readings exactly as the meters sent them (text, nothing dropped), from the "
                "current version of every file with readings on that day, each row traced to its file "
                "and line. Its rows are the staged rows (staging/) of the files its per-day manifest "
                "lists (key, size, checksum, row count, ledger batch, backup object) under "
                "raw/manifests/: staged files are never rewritten, so the manifest pins them."
            ),
        ),
        dg.AssetSpec(
            CLEANSED,
            deps=[RAW],
            group_name="quality",
            kinds={"polars", "parquet"},
            description=(
                "Readings that passed the rules: units converted to kW (W / 1000), one row per meter "
                "and instant (rows sent twice collapsed), missing values kept and marked is_missing."
            ),
        ),
        dg.AssetSpec(
            QUARANTINED,
            deps=[RAW],
            group_name="quality",
            kinds={"json"},
            description=(
                "Rejected rows for review, never lost: the original fields plus reason, source_file "
                "and line_number, as JSON Lines under the lake's quarantine/."
            ),
        ),
        dg.AssetSpec(
            FLAGGED,
            deps=[CLEANSED],
            group_name="quality",
            kinds={"polars", "parquet"},
            description=(
                "The day's cleansed readings with their flags: is_anomaly (above the maximum kW, kept "
                "but out of every peak), is_faulty (inside a run at or near zero long enough to call "
                "the meter faulty), and the local date, hour and peak-period flag. The faulty periods "
                "found are kept beside them. Not built when a blocking check of cleansed_readings fails."
            ),
        ),
    ],
    partitions_def=daily_partitions,
    retry_policy=IO_RETRY,
    can_subset=True,
    check_specs=[
        daily_check(RAW_SCHEMA, RAW, description=RawReadings.__doc__),
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
    """Raw rows to flagged readings in one pass over the day, a slice of meters at a time: each
    slice is checked as sent, validated, and flagged while it is in memory, and each layer is
    written as it goes, instead of every step reading back the one before (serialization between
    steps cost ~1 s of CPU a day). Any subset can be materialized: cleansed and quarantined alone
    read the raw rows the last manifest pins, flagged alone reads the cleansed layer. When a
    blocking check of cleansed_readings fails, flagged_anomalies is not published and the step
    fails."""
    day = partition_day(context)
    store = storage.lake_store()
    config = rules.config()
    selected = context.selected_asset_keys
    check_raw, keep, quarantine = RAW in selected, CLEANSED in selected, QUARANTINED in selected
    validate, flag = keep or quarantine, FLAGGED in selected
    # Flagged from the cleansed rows as they are made when cleansed_readings is built too, else
    # from its layer as last materialized: flagged_anomalies always derives from that asset.
    flag_inline = flag and keep
    selected_checks = context.selected_asset_check_keys
    slice_rows = storage.slice_rows_or_default()
    raw_check, cleansed_check = SchemaCheck(RawReadings), SchemaCheck(CleansedReadings)
    stats = {"rows_in": 0, "rows_collapsed": 0, "missing": 0, "anomalies": 0, "faulty_readings": 0}
    counts = dict.fromkeys(REASONS, 0)
    kept_head, quarantined_head, anomaly_sample = Preview(), Preview(), Preview()
    periods: list[pl.DataFrame] = []
    raw_rows = 0
    files = manifest = None
    results: list[Any] = []
    with ExitStack() as stack:
        if check_raw:
            ledger = ingestion.load_ledger(store)
            files = ingestion.day_files(ledger, day)
            whole = ingestion.whole_batches(ledger, day, files)
            raw_slices = stack.enter_context(
                ingestion.staged_row_slices(store, day, files, whole, slice_rows)
            )
        elif validate:
            manifest = read_manifest(store, day)
            raw_slices = stack.enter_context(ingestion.manifest_row_slices(store, manifest, slice_rows))
        cleansed_out = (
            stack.enter_context(lake.SliceWriter(store, lake.layer_key("cleansed_readings", day)))
            if keep
            else None
        )
        quarantined_out = (
            stack.enter_context(lake.JsonLinesWriter(store, lake.quarantine_key(day))) if quarantine else None
        )
        flagged_out = (
            stack.enter_context(lake.SliceWriter(store, lake.layer_key("flagged_anomalies", day)))
            if flag
            else None
        )

        def flagged_slice(flagged: pl.DataFrame, found: pl.DataFrame) -> None:
            assert flagged_out is not None
            flagged_out.write(flagged)
            periods.append(found)
            stats["anomalies"] += int(flagged.get_column("is_anomaly").sum())
            stats["faulty_readings"] += int(flagged.get_column("is_faulty").sum())
            anomaly_sample.add(flagged.filter(pl.col("is_anomaly")))

        if check_raw or validate:
            # A slice of meters at a time (see lake.meter_slice): a meter's rows, and so its
            # duplicates and stuck runs, always share a slice. Two slices at once (lake.mapped).
            def rules_of(raw: pl.DataFrame) -> tuple[pl.DataFrame, Any, Any]:
                if not validate:
                    return raw, None, None
                result = validate_readings(raw, config, day)
                return raw, result, flag_readings(result.cleansed, config) if flag_inline else None

            for raw, result, flagged in stack.enter_context(lake.mapped(rules_of, raw_slices)):
                raw_rows += raw.height
                if check_raw:
                    raw_check.add(raw)
                if result is None:
                    continue
                if cleansed_out is not None:
                    cleansed_out.write(result.cleansed)
                    cleansed_check.add(result.cleansed)
                if quarantined_out is not None:
                    quarantined_out.write(result.quarantined)
                    quarantined_head.add(result.quarantined)
                results.append((result.cleansed.height, result.quarantined.height))
                stats["rows_in"] += result.rows_in
                stats["rows_collapsed"] += result.collapsed_rows
                stats["missing"] += int(result.cleansed.get_column("is_missing").sum())
                for reason, n in result.reason_counts().items():
                    counts[reason] += n
                kept_head.add(result.cleansed)
                if flagged is not None:
                    flagged_slice(*flagged)
        if flag and not flag_inline:
            # flagged_anomalies alone: from the cleansed layer as last materialized.
            cleansed_slices = stack.enter_context(
                lake.read_slices(store, lake.layer_key("cleansed_readings", day))
            )
            for flagged in stack.enter_context(
                lake.mapped(lambda cleansed: flag_readings(cleansed, config), cleansed_slices)
            ):
                flagged_slice(*flagged)
        if check_raw:
            assert files is not None
            manifest = {
                "day": day.isoformat(),
                "files_digest": ingestion.files_digest(files),
                "rows": raw_rows,
                # Batches whose staged rows for the day are all of these files (read without a join).
                "whole_batches": whole,
                # Where each file's original bytes are kept: its own object under raw/files/, or
                # (small files) a member of the same name in a zip under raw/packs/
                # (lake.read_raw_backup).
                "files": files.select("key", "size", "checksum", "rows", "batch")
                .with_columns(ingestion.backup_objects(files))
                .to_dicts(),
            }
            lake.write_json(store, lake.raw_manifest_key(day), manifest)
        kept_rows = sum(kept for kept, _ in results)
        quarantined_rows = sum(q for _, q in results)
        checks: list[dg.AssetCheckResult] = []
        all_periods = None
        if keep:
            accounted = kept_rows + quarantined_rows + stats["rows_collapsed"]
            checks = [
                cleansed_check.result(CLEANSED_SCHEMA, CLEANSED),
                dg.AssetCheckResult(
                    check_name=ROWS_CONSERVED,
                    asset_key=CLEANSED,
                    passed=accounted == stats["rows_in"],
                    metadata={
                        "rows_in": stats["rows_in"],
                        "rows_kept": kept_rows,
                        "rows_quarantined": quarantined_rows,
                        "rows_collapsed": stats["rows_collapsed"],
                        "unaccounted": stats["rows_in"] - accounted,
                    },
                ),
            ]
        checks = [c for c in checks if dg.AssetCheckKey(c.asset_key, c.check_name) in selected_checks]
        blocked = [c.check_name for c in checks if not c.passed]
        if flagged_out is not None:
            if blocked:
                # What the blocking checks refused is not passed on: the previous flagged layer stays.
                flagged_out.discard()
            else:
                all_periods = pl.concat(periods).sort("meter_id", "start_ts")
                lake.write_layer(store, lake.layer_key("faulty_periods", day), all_periods)
        if validate:
            lake.write_json(
                store,
                lake.validation_stats_key(day),
                {"rows_in": stats["rows_in"], "rows_collapsed": stats["rows_collapsed"], "reasons": counts},
            )
    if check_raw:
        assert files is not None and manifest is not None
        yield dg.MaterializeResult(
            asset_key=RAW,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(raw_rows),
                "files": dg.MetadataValue.int(files.height),
                "source_files": preview(
                    files.select("key", "size", "rows", pl.col("checksum").str.slice(0, 16))
                ),
                "manifest": dg.MetadataValue.path(lake.raw_manifest_key(day)),
            },
        )
        if dg.AssetCheckKey(RAW, RAW_SCHEMA) in selected_checks:
            yield raw_check.result(RAW_SCHEMA, RAW)
    if keep:
        yield dg.MaterializeResult(
            asset_key=CLEANSED,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(kept_rows),
                "rows_in": dg.MetadataValue.int(stats["rows_in"]),
                "rows_collapsed": dg.MetadataValue.int(stats["rows_collapsed"]),
                "missing_values": dg.MetadataValue.int(stats["missing"]),
                "preview": kept_head.value(),
            },
        )
    if quarantine:
        yield dg.MaterializeResult(
            asset_key=QUARANTINED,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(quarantined_rows),
                **{f"reason_{reason}": dg.MetadataValue.int(n) for reason, n in counts.items()},
                "location": dg.MetadataValue.path(lake.quarantine_key(day)),
                "preview": quarantined_head.value(),
            },
        )
    yield from checks
    if flag and blocked:
        raise dg.Failure(
            description=(
                f"cleansed_readings failed its blocking check(s) {', '.join(blocked)} for {day}: "
                "flagged_anomalies and everything built from it were not updated (the previous "
                "versions stay). See the check results for the failing rows."
            ),
            allow_retries=False,
        )
    if flag:
        assert flagged_out is not None and all_periods is not None
        yield dg.MaterializeResult(
            asset_key=FLAGGED,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(flagged_out.rows),
                "anomalies": dg.MetadataValue.int(stats["anomalies"]),
                "faulty_readings": dg.MetadataValue.int(stats["faulty_readings"]),
                "faulty_meters": dg.MetadataValue.int(all_periods.get_column("meter_id").n_unique()),
                "anomaly_sample": anomaly_sample.value(),
            },
        )


def read_manifest(store: BlobStore, day: date) -> dict:
    """The raw manifest of ``day``: the files raw_meter_files was last materialized from."""
    key = lake.raw_manifest_key(day)
    if not store.exists(key):
        raise dg.Failure(
            description=(
                f"raw_meter_files has not been materialized for {day} (no {key}): materialize it "
                "first, or together with cleansed_readings."
            ),
            allow_retries=False,
        )
    return lake.read_json(store, key)
