"""Quality: the day's raw rows through the rules in one pass. Valid readings go on with their
flags, the rest to quarantine with a reason."""

from contextlib import ExitStack
from datetime import date, timedelta
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
from greenstream_assets.rules import incidents, validation
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
                "the meter faulty, counted from the previous day when the run began there), and the "
                "local date, hour and peak-period flag. The faulty periods found are kept beside them. Not built when a blocking check of cleansed_readings fails."
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
    steps cost ~1.5 s of CPU a day). Any subset can be materialized: cleansed and quarantined
    (always together: the two sides of one validation) read the raw rows the last manifest pins,
    flagged alone reads the cleansed layer, and a check alone is evaluated on what its asset last
    published. Outputs are published upstream first (manifest, cleansed layer and quarantine,
    validation stats, flagged layer, faulty periods), so a failure part way leaves later outputs at
    their previous version, never ahead of what they are made from. When a blocking check of
    cleansed_readings fails, flagged_anomalies is not published and the step fails."""
    day = partition_day(context)
    store = storage.lake_store()
    config = rules.config()
    selected = context.selected_asset_keys
    build_raw, keep, quarantine, flag = (key in selected for key in (RAW, CLEANSED, QUARANTINED, FLAGGED))
    if keep != quarantine:
        raise dg.Failure(
            description=(
                "cleansed_readings and quarantined_readings are the two sides of one validation (every "
                "raw row is kept, quarantined or collapsed): materialize them together."
            ),
            allow_retries=False,
        )
    validate = keep
    flag_inline = flag and validate
    wanted_checks = context.selected_asset_check_keys
    check_raw, check_cleansed, check_conserved = (
        dg.AssetCheckKey(asset, name) in wanted_checks
        for asset, name in ((RAW, RAW_SCHEMA), (CLEANSED, CLEANSED_SCHEMA), (CLEANSED, ROWS_CONSERVED))
    )
    slice_rows = storage.slice_rows_or_default()
    raw_check = SchemaCheck(RawReadings) if check_raw else None
    cleansed_check = SchemaCheck(CleansedReadings) if check_cleansed else None
    stats = {"rows_in": 0, "rows_collapsed": 0, "missing": 0, "anomalies": 0, "faulty_readings": 0}
    counts = dict.fromkeys(REASONS, 0)
    kept_head, quarantined_head, anomaly_sample = Preview(), Preview(), Preview()
    periods: list[pl.DataFrame] = []
    raw_rows = kept_rows = quarantined_rows = 0
    files = whole = None
    checks: list[dg.AssetCheckResult] = []

    # Rule 5 across midnight: the previous day's rows of the meters that may have been stuck at its
    # end (a few hundred of 50,000), which a run of today's readings may continue.
    earlier = None
    previous = lake.archive_key(day - timedelta(days=1))
    if flag and store.exists(previous):
        with lake.local_copy(store, previous) as path:
            earlier = incidents.tail_of_stuck_meters(pl.scan_parquet(path, hive_partitioning=False), config)

    def flagged_slice(flagged: pl.DataFrame, found: pl.DataFrame) -> None:
        assert flagged_out is not None
        flagged_out.write(flagged)
        periods.append(found)
        stats["anomalies"] += int(flagged.get_column("is_anomaly").sum())
        stats["faulty_readings"] += int(flagged.get_column("is_faulty").sum())
        anomaly_sample.add(flagged.filter(pl.col("is_anomaly")))

    with ExitStack() as outer:
        # Published last, when the block below has published what it is made from.
        flagged_out = (
            outer.enter_context(lake.SliceWriter(store, lake.layer_key("flagged_anomalies", day)))
            if flag
            else None
        )
        with ExitStack() as stack:
            # Entered in the reverse of their publication order (last in, first out): the cleansed
            # layer, then the quarantine.
            quarantined_out = (
                stack.enter_context(lake.JsonLinesWriter(store, lake.quarantine_key(day)))
                if validate
                else None
            )
            cleansed_out = None
            if flag_inline:
                # Flagged inline, the flagged layer's file is the cleansed layer too (the same rows,
                # with five columns more; readers of the cleansed layer take its columns): one
                # file written, not two (~0.3 s of CPU a day), published twice.
                assert flagged_out is not None
                stack.enter_context(
                    lake.published_copy(flagged_out, lake.layer_key("cleansed_readings", day))
                )
            elif validate:
                cleansed_out = stack.enter_context(
                    lake.SliceWriter(store, lake.layer_key("cleansed_readings", day))
                )
            if build_raw or validate or check_raw:
                if build_raw:
                    ledger = ingestion.load_ledger(store)
                    files = ingestion.day_files(ledger, day)
                    whole = ingestion.whole_batches(ledger, day, files)
                    source = ingestion.staged_row_slices(store, day, files, whole, slice_rows)
                else:
                    source = ingestion.manifest_row_slices(store, read_manifest(store, day), slice_rows)
                raw_slices = stack.enter_context(source)

                # A slice of meters at a time (see lake.meter_slice): a meter's rows, and so its
                # duplicates and stuck runs, always share a slice. Two slices at once (lake.mapped).
                def rules_of(raw: pl.DataFrame) -> tuple[pl.DataFrame, Any, Any, dict[str, int]]:
                    if not validate:
                        return raw, None, None, {}
                    result = validate_readings(raw, config, day)
                    return (
                        raw,
                        result,
                        flag_readings(result.cleansed, config, earlier) if flag_inline else None,
                        result.reason_counts(),
                    )

                # The quarantine's JSON is written on a thread of its own (closed before the
                # quarantine is published: last in, first out).
                quarantining = stack.enter_context(lake.OneBehind("quarantine"))
                mapped = stack.enter_context(lake.mapped(rules_of, raw_slices))
                for raw, result, flagged, reason_counts in mapped:
                    raw_rows += raw.height
                    if raw_check is not None:
                        raw_check.add(raw)
                    if result is None:
                        continue
                    assert quarantined_out is not None
                    if cleansed_out is not None:
                        cleansed_out.write(result.cleansed)
                    quarantining.submit(quarantined_out.write, result.quarantined)
                    if cleansed_check is not None:
                        cleansed_check.add(result.cleansed)
                    kept_rows += result.cleansed.height
                    quarantined_rows += result.quarantined.height
                    stats["rows_in"] += result.rows_in
                    stats["rows_collapsed"] += result.collapsed_rows
                    stats["missing"] += int(result.cleansed.get_column("is_missing").sum())
                    for reason, n in reason_counts.items():
                        counts[reason] += n
                    kept_head.add(result.cleansed)
                    quarantined_head.add(result.quarantined)
                    if flagged is not None:
                        flagged_slice(*flagged)
                # The last slice's quarantine written (or its error raised) before anything that
                # follows from the validation, the raw manifest first.
                quarantining.close()
            if not validate and ((flag and not flag_inline) or check_cleansed or check_conserved):
                # flagged_anomalies or cleansed_readings' checks alone: from the cleansed layer as
                # last published.
                cleansed_slices = stack.enter_context(
                    lake.read_slices(
                        store, lake.layer_key("cleansed_readings", day), list(validation.CLEANSED_SCHEMA)
                    )
                )

                def from_layer(cleansed: pl.DataFrame) -> tuple[pl.DataFrame, Any]:
                    return cleansed, flag_readings(cleansed, config, earlier) if flag else None

                for cleansed, flagged in stack.enter_context(lake.mapped(from_layer, cleansed_slices)):
                    kept_rows += cleansed.height
                    if cleansed_check is not None:
                        cleansed_check.add(cleansed)
                    if flagged is not None:
                        flagged_slice(*flagged)
            if build_raw:
                # Before any layer is published: what the day's layers are built from comes first.
                assert files is not None and whole is not None
                lake.write_json(store, lake.raw_manifest_key(day), raw_manifest(day, files, whole, raw_rows))
            if raw_check is not None:
                checks.append(raw_check.result(RAW_SCHEMA, RAW))
            if cleansed_check is not None:
                checks.append(cleansed_check.result(CLEANSED_SCHEMA, CLEANSED))
            if check_conserved:
                conserved = (
                    (stats["rows_in"], stats["rows_collapsed"], quarantined_rows)
                    if validate
                    else stored_validation(store, day)
                )
                checks.append(rows_conserved(kept_rows, *conserved))
        # The cleansed layer and the quarantine are published; the counts made with them follow.
        if validate:
            lake.write_json(
                store,
                lake.validation_stats_key(day),
                {"rows_in": stats["rows_in"], "rows_collapsed": stats["rows_collapsed"], "reasons": counts},
            )
        blocked = [c.check_name for c in checks if c.asset_key == CLEANSED and not c.passed]
        if flagged_out is not None and blocked:
            # What the blocking checks refused is not passed on: the previous flagged layer stays.
            flagged_out.discard()
    all_periods = None
    if flag and not blocked:
        all_periods = pl.concat(periods).sort("meter_id", "start_ts")
        lake.write_layer(store, lake.layer_key("faulty_periods", day), all_periods)

    if build_raw:
        assert files is not None
        yield dg.MaterializeResult(
            asset_key=RAW,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(raw_rows),
                "files": dg.MetadataValue.int(files.get_column("key").n_unique()),
                "source_files": preview(
                    files.unique("key", keep="first", maintain_order=True).select(
                        "key", "size", "rows", pl.col("checksum").str.slice(0, 16)
                    )
                ),
                "manifest": dg.MetadataValue.path(lake.raw_manifest_key(day)),
            },
        )
    if validate:
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
        # The same rows would fail again: neither the step nor the run is retried (the instance's
        # run retries skip a run tagged so).
        context.instance.add_run_tags(context.run.run_id, {NO_RETRY_ON_STEP_FAILURE: "false"})
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


# Dagster's run tag that decides whether the instance's run retries take a run failed by a step.
NO_RETRY_ON_STEP_FAILURE = "dagster/retry_on_asset_or_op_failure"


def raw_manifest(day: date, files: pl.DataFrame, whole: list[str], rows: int) -> dict:
    """What raw_meter_files records of a day: its files, their digest, and how to read their rows."""
    return {
        "day": day.isoformat(),
        "files_digest": ingestion.files_digest(files),
        "rows": rows,
        # Batches whose staged rows for the day are all of these files (read without a join).
        "whole_batches": whole,
        # Where each file's original bytes are kept: its own object under raw/files/, or (small
        # files) a member of the same name in a zip under raw/packs/ (lake.read_raw_backup).
        "files": files.select("key", "size", "checksum", "rows", "batch")
        .with_columns(ingestion.backup_objects(files))
        .to_dicts(),
    }


def rows_conserved(kept: int, rows_in: int, collapsed: int, quarantined: int) -> dg.AssetCheckResult:
    accounted = kept + quarantined + collapsed
    return dg.AssetCheckResult(
        check_name=ROWS_CONSERVED,
        asset_key=CLEANSED,
        passed=accounted == rows_in,
        metadata={
            "rows_in": rows_in,
            "rows_kept": kept,
            "rows_quarantined": quarantined,
            "rows_collapsed": collapsed,
            "unaccounted": rows_in - accounted,
        },
    )


def stored_validation(store: BlobStore, day: date) -> tuple[int, int, int]:
    """(rows in, rows collapsed, rows quarantined) of the day's last validation, as published
    with its cleansed layer and quarantine."""
    key = lake.validation_stats_key(day)
    if not store.exists(key):
        raise dg.Failure(
            description=f"cleansed_readings has not been materialized for {day} (no {key}).",
            allow_retries=False,
        )
    stats = lake.read_json(store, key)
    return stats["rows_in"], stats["rows_collapsed"], sum(stats["reasons"].values())


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
    manifest = lake.read_json(store, key)
    if any("batch" not in f for f in manifest["files"]):
        raise dg.Failure(
            description=(
                f"The raw manifest of {day} ({key}) was written before manifests named each file's "
                "ingestion batch, so its rows cannot be found again: materialize raw_meter_files "
                "first, or together with cleansed_readings."
            ),
            allow_retries=False,
        )
    return manifest
