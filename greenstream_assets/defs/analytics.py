"""Outputs people act on beyond the core chain: VEE estimates and completeness, the per-meter peak
report, the faulty-meter registry, forecasting features, and data quality over time."""

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import date, timedelta

import dagster as dg
import polars as pl

from greenstream_assets.defs.checks import daily_check, markdown_table
from greenstream_assets.defs.common import IO_RETRY, WAREHOUSE_POOL, Preview, partition_day
from greenstream_assets.defs.partitions import daily_partitions
from greenstream_assets.defs.resources import RulesResource, StorageResource
from greenstream_assets.rules import drift, features, incidents, meter_reports, vee
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.validation import (
    CONFLICTING_DUPLICATE,
    INVALID_TIMESTAMP,
    INVALID_UNIT,
    NEGATIVE_VALUE,
    TIMESTAMP_OUT_OF_RANGE,
)
from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import BlobStore
from greenstream_assets.storage.warehouse import Warehouse

NEW_FAULTY_INCIDENTS = "new_faulty_incidents"
QUALITY_DRIFT = "quality_drift"
HISTORY_COLUMNS = ["meter_id", "reading_ts", "energy_kw", "is_missing", "is_anomaly", "is_faulty"]


def _existing(store: BlobStore, keys: list[str]) -> list[str]:
    return [key for key in keys if store.exists(key)]


ESTIMATED = dg.AssetKey("estimated_readings")
METER_PEAKS = dg.AssetKey("meter_daily_peaks")
FEATURES = dg.AssetKey("hourly_meter_features")


QUALITY = dg.AssetKey("daily_quality")
QUALITY_SPEC = dg.AssetSpec(
    QUALITY,
    deps=["cleansed_readings", "quarantined_readings", "flagged_anomalies", ESTIMATED],
    group_name="reports",
    kinds={"polars", "duckdb", "table"},
    description=(
        "Per-rule counts for the day (invalid units and timestamps, duplicates, negatives, missing, "
        "anomalies, faulty meters, estimated intervals) as numeric metadata the UI plots over time, "
        "and as the table daily_quality that the drift check compares against."
    ),
)
QUALITY_CHECK = daily_check(
    QUALITY_DRIFT,
    QUALITY,
    description=(
        "Warns when the day's rate of anomalies or of invalid rows exceeds 3x its trailing 14-day "
        "median: a firmware or unit change upstream."
    ),
)


@dg.multi_asset(
    name="estimate_and_report",
    specs=[
        dg.AssetSpec(
            ESTIMATED,
            deps=["flagged_anomalies", "meter_readings_archive"],
            group_name="quality",
            kinds={"polars", "parquet", "duckdb"},
            description=(
                "Validation, Estimation, Editing: every meter's full interval grid for the day with a "
                "quality code per reading (actual, estimated_linear, estimated_history, missing, anomaly, "
                "faulty). Short gaps are interpolated between actual neighbours, longer ones estimated "
                "from the same weekday and time over previous weeks; what the meter sent is never "
                "overwritten (energy_kw keeps it, estimated_kw holds the estimate). Parquet under "
                "vee/estimated_readings/; per-meter completeness (expected vs received intervals, "
                "DST-aware) in the table meter_completeness."
            ),
        ),
        dg.AssetSpec(
            METER_PEAKS,
            deps=[ESTIMATED],
            group_name="reports",
            kinds={"polars", "duckdb", "table"},
            description=(
                "Per meter and day: peak kW and when, energy in kWh (peak and off-peak periods), average "
                "kW and load factor. Missing and anomalous readings never set a peak; estimated "
                "intervals count in energy and are reported in their own column. The top meters by "
                "peak demand are previewed here."
            ),
        ),
        dg.AssetSpec(
            FEATURES,
            deps=[ESTIMATED],
            group_name="reports",
            kinds={"polars", "parquet"},
            description=(
                "Forecasting-ready data: per meter and local hour, kWh, peak kW, share of estimated "
                "intervals, local hour, weekday, weekend and holiday flags, and the previous day's and "
                "previous week's same-hour kWh. Parquet under features/hourly/date=YYYY-MM-DD/ (hive "
                "layout, one line to load)."
            ),
        ),
        QUALITY_SPEC,
    ],
    partitions_def=daily_partitions,
    retry_policy=IO_RETRY,
    pool=WAREHOUSE_POOL,
    can_subset=True,
    check_specs=[QUALITY_CHECK],
)
def estimate_and_report(context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource):
    """VEE's grid and the two outputs made from it, a slice of meters at a time: each slice's grid
    is estimated, written, and turned into its per-meter report and hourly features while it is in
    memory, instead of being read back by two more steps. daily_quality follows, from the counts
    made on the way (the flagged readings', the estimated intervals'). Any subset can be
    materialized: the reports alone read the grid the last materialization of estimated_readings
    wrote, daily_quality alone the layers it counts."""
    warehouse = storage.open_warehouse()
    # One warehouse connection for the step's tables (see Warehouse.session).
    with warehouse.session():
        yield from _estimate_and_report(context, storage, rules, warehouse)


def _estimate_and_report(
    context: dg.AssetExecutionContext, storage: StorageResource, rules: RulesResource, warehouse: Warehouse
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    day = partition_day(context)
    config = rules.config()
    # The local day the partition estimates: the day itself in UTC and east of it, the day before
    # west of UTC (whose local day ends in the next UTC day), see vee.partition_local_day.
    local_day = vee.partition_local_day(day, config.timezone)
    store = storage.lake_store()
    estimate, report, feature, quality = (
        key in context.selected_asset_keys for key in (ESTIMATED, METER_PEAKS, FEATURES, QUALITY)
    )
    flagged_parts: list[dict[str, int]] = []
    codes: dict[str, int] = {}
    complete_parts, report_parts = [], []
    head = Preview()
    with ExitStack() as stack:
        if estimate:
            history_keys = _existing(store, [lake.archive_key(d) for d in vee.history_days(day, config)])
            history_paths = stack.enter_context(lake.local_copies(store, history_keys))
            slices = stack.enter_context(
                lake.read_slices(store, lake.layer_key("flagged_anomalies", day), list(vee.READING_COLUMNS))
            )
            grid_out = stack.enter_context(
                lake.SliceWriter(
                    store, lake.estimated_key(day), compression="zstd", statistics=True, meter_slices=True
                )
            )
        elif report or feature:
            slices = stack.enter_context(lake.read_slices(store, lake.estimated_key(day)))
        else:
            slices = iter(())  # daily_quality alone: it reads what it counts itself
        if feature:
            feature_keys = _existing(
                store, [lake.features_key(day - timedelta(days=back)) for back in (1, 7)]
            )
            feature_paths = stack.enter_context(lake.local_copies(store, feature_keys))
            features_out = stack.enter_context(
                lake.SliceWriter(
                    store, lake.features_key(day), compression="zstd", statistics=True, meter_slices=True
                )
            )

        def grid(part: pl.DataFrame) -> pl.DataFrame:
            history = lake.read_meters(
                history_paths,
                HISTORY_COLUMNS,
                part.get_column("meter_id").unique(),
                # Of the previous day, only the hours of the local day and a short gap's reach.
                vee.history_window(local_day, config),
            )
            if quality:
                flagged_parts.append(flagged_counts(part))
            return vee.estimate_coded(part, history, config, local_day)

        def hourly(estimated: pl.DataFrame) -> None:
            meters = estimated.get_column("meter_id").unique()
            history = lake.read_meters(feature_paths, list(features.HISTORY_COLUMNS), meters)
            table = features.hourly_features(estimated, history, config)
            features_out.write(table)
            head.add(table)

        def counted(estimated: pl.DataFrame) -> None:
            for code, n in estimated.group_by("quality_code").len().iter_rows():
                codes[code] = codes.get(code, 0) + n
            complete_parts.append(vee.completeness_from_estimate(estimated, local_day, config))

        # A slice's features, its report and its counts are each made on a thread of their own
        # while the next slices' grids are estimated, two at once (polars releases the GIL); one
        # slice of each in flight, so they are written in slice order. On one thread together,
        # they kept this one waiting for them ~1.2 s a day.
        grids = stack.enter_context(lake.mapped(grid, slices)) if estimate else slices
        on_hours = stack.enter_context(lake.OneBehind("features"))
        on_report = stack.enter_context(lake.OneBehind("report"))
        on_counts = stack.enter_context(lake.OneBehind("counts"))
        for estimated in grids:
            if estimate:
                # Stored as text; the codes stay an enum (vee.QUALITY_ENUM) for the outputs below.
                grid_out.write(estimated.with_columns(pl.col("quality_code").cast(pl.String)))
                on_counts.submit(counted, estimated)
            if feature:
                on_hours.submit(hourly, estimated)
            if report:
                on_report.submit(
                    lambda part: report_parts.append(meter_reports.meter_daily_report(part, config, day)),
                    estimated,
                )
            del estimated
        for behind in (on_hours, on_report, on_counts):
            behind.close()
    if estimate:
        complete = pl.concat(complete_parts).sort("meter_id").with_columns(reading_date=pl.lit(day))
        warehouse.replace_day("meter_completeness", day, complete)
        yield dg.MaterializeResult(
            asset_key=ESTIMATED,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(grid_out.rows),
                **{
                    f"intervals_{code}": dg.MetadataValue.int(codes.get(code, 0))
                    for code in vee.QUALITY_CODES
                },
                "mean_completeness": dg.MetadataValue.float(
                    float(complete.get_column("completeness_ratio").mean() or 0)
                ),
            },
        )
    if report:
        peaks = pl.concat(report_parts).sort("meter_id")
        warehouse.replace_day("meter_daily_peaks", day, peaks)
        top = meter_reports.top_meters(peaks, config.top_n_meters)
        yield dg.MaterializeResult(
            asset_key=METER_PEAKS,
            metadata={
                "dagster/row_count": dg.MetadataValue.int(peaks.height),
                "total_energy_kwh": dg.MetadataValue.float(float(peaks.get_column("energy_kwh").sum() or 0)),
                f"top_{config.top_n_meters}_meters": dg.MetadataValue.md(
                    markdown_table(top.select("meter_id", "peak_kw", "peak_ts", "energy_kwh", "load_factor"))
                ),
            },
        )
    if feature:
        yield dg.MaterializeResult(
            asset_key=FEATURES,
            metadata={"dagster/row_count": dg.MetadataValue.int(features_out.rows), "preview": head.value()},
        )
    if quality:
        counted = (
            {name: sum(part[name] for part in flagged_parts) for name in ("rows", "missing", "anomalies")},
            sum(codes.get(code, 0) for code in vee.ESTIMATED_CODES),
        )
        yield from materialize_quality(
            store, warehouse, config, day, *(counted if estimate else (None, None))
        )


class DayIncidents:
    """A day's incidents from its flagged readings, a slice of meters at a time (``add``), the
    previous day's archived tail of stuck meters and ``previous_open`` (the previous day's
    incidents); ``result`` sorted by ``incidents.KEY``."""

    def __init__(
        self, store: BlobStore, day: date, config: RulesConfig, previous_open: pl.DataFrame | None
    ) -> None:
        self.config, self.previous_open = config, previous_open
        archive = lake.archive_key(day - timedelta(days=1))
        # What the tail was read from (see ``made_from``).
        self.archive_version = _version(store, archive)
        with lake.local_copies(store, _existing(store, [archive])) as tail_paths:
            # Of the previous day, the rows of the meters with a near-zero reading: the only ones
            # the day's incidents can use (a few hundred meters of 50,000, read once).
            self.tail = (
                incidents.tail_of_stuck_meters(pl.scan_parquet(tail_paths, hive_partitioning=False), config)
                if tail_paths
                else pl.DataFrame(schema=incidents.READING_SCHEMA)
            )
        # The meters of yesterday's tail and open incidents: the only ones whose rows there a
        # slice needs, and those of them that send nothing today still have their incidents go on.
        known = [self.tail.get_column("meter_id")]
        if previous_open is not None:
            known.append(previous_open.get_column("meter_id"))
        self.known = pl.concat(known).unique()
        self.parts: list[pl.DataFrame] = []
        self.seen: list[pl.Series] = []
        # An error in a slice's incidents, kept for ``made_from`` (the step's other outputs go on).
        self.failed: Exception | None = None

    def _of(self, meters: pl.Series, readings: pl.DataFrame) -> pl.DataFrame:
        wanted = pl.col("meter_id").is_in(meters.implode())
        opened = self.previous_open.filter(wanted) if self.previous_open is not None else None
        return incidents.day_incidents(self.tail.filter(wanted), readings, self.config, opened)

    def add(self, readings: pl.DataFrame) -> None:
        """A slice of meters, each with only its own meters' tail and open incidents (of those
        meters, the ones the slice holds: found without hashing every id when there are none).
        An error is kept, not raised: ``made_from`` then says to work the day out again."""
        if self.failed is not None:
            return
        try:
            self._add(readings)
        except Exception as err:
            self.failed = err

    def _add(self, readings: pl.DataFrame) -> None:
        present = (
            readings.select(
                pl.col("meter_id").filter(pl.col("meter_id").is_in(self.known.implode())).unique()
            ).to_series()
            if self.known.len()
            else self.known
        )
        self.seen.append(present)
        self.parts.append(self._of(present, readings))

    def result(self) -> pl.DataFrame:
        """...then the meters of yesterday's tail and open incidents that sent nothing today: their
        open incidents go on (a meter with neither has none)."""
        if self.failed is not None:
            raise self.failed
        parts = list(self.parts)
        silent = self.known.filter(~self.known.is_in(pl.concat([self.known.clear(), *self.seen]).implode()))
        if silent.len():
            parts.append(self._of(silent, pl.DataFrame(schema=incidents.READING_SCHEMA)))
        if not parts:
            return pl.DataFrame(schema=incidents.INCIDENT_SCHEMA)
        return pl.concat(parts).sort(*incidents.KEY)

    def made_from(self, store: BlobStore, day: date, previous_open: pl.DataFrame | None) -> bool:
        """Whether every slice was added and what the incidents were made from is still current:
        the previous day's archive and open incidents (``previous_open``, read again)."""
        same_open = (
            previous_open is None
            if self.previous_open is None
            else previous_open is not None and previous_open.equals(self.previous_open)
        )
        return (
            self.failed is None
            and same_open
            and _version(store, lake.archive_key(day - timedelta(days=1))) == self.archive_version
        )


def _version(store: BlobStore, key: str) -> str | None:
    """The version of the object ``key`` (see ``ObjectInfo.version``), None when there is none."""
    folder = key.rsplit("/", 1)[0]
    return next((info.version for info in store.list(folder) if info.key == key), None)


def _incidents_of_day(
    store: BlobStore, day: date, config: RulesConfig, previous_open: pl.DataFrame | None
) -> pl.DataFrame:
    """``day``'s incidents from its flagged readings as published (``DayIncidents``)."""
    found = DayIncidents(store, day, config, previous_open)
    with lake.read_slices(
        store, lake.layer_key("flagged_anomalies", day), list(incidents.READING_COLUMNS)
    ) as slices:
        for readings in slices:
            found.add(readings)
    return found.result()


def _publish_incidents(store: BlobStore, warehouse: Warehouse, day: date, found: pl.DataFrame) -> None:
    """``day``'s incidents to faulty_incident_days, then to the lake (what the next day reads, and
    what a carry-forward compares with: written last, it says the day was published whole)."""
    warehouse.replace_day("faulty_incident_days", day, found.with_columns(reading_date=pl.lit(day)))
    lake.write_parquet(store, lake.layer_key("faulty_incidents", day), found)


def _carry_forward(
    store: BlobStore,
    warehouse: Warehouse,
    config: RulesConfig,
    day: date,
    state: pl.DataFrame,
    whole: bool = False,
) -> list[date]:
    """Recompute the days after ``day`` that were already computed, from ``state`` (``day``'s
    incidents), one after another until one comes out as it is stored (``whole``: through the last
    computed day). A marker names the chain while it runs, so a chain cut short (a crash, a failed
    write) is finished by the next run of any day, then through the last day: where it stopped, a
    day may be published and the one after it not. Returns the days rewritten."""
    marker = lake.incidents_carry_key(day)
    lake.write_json(store, marker, {"from": day.isoformat()})
    carried = []
    following = day + timedelta(days=1)
    while store.exists(lake.layer_key("faulty_incidents", following)) and store.exists(
        lake.layer_key("flagged_anomalies", following)
    ):
        stored = lake.read_parquet(store, lake.layer_key("faulty_incidents", following))
        redone = _incidents_of_day(store, following, config, state)
        if redone.equals(stored):
            if not whole:
                break
            following, state = following + timedelta(days=1), redone
            continue
        _publish_incidents(store, warehouse, following, redone)
        carried.append(following)
        following, state = following + timedelta(days=1), redone
    store.delete(marker)
    return carried


INCIDENTS = dg.AssetKey("faulty_meter_incidents")
INCIDENTS_SPEC = dg.AssetSpec(
    INCIDENTS,
    deps=["flagged_anomalies", "meter_readings_archive"],
    group_name="reports",
    kinds={"polars", "duckdb", "table"},
    description=(
        "The faulty-meter registry: one incident per meter and stuck period (start, end, duration, "
        "open/closed), followed across midnight using the previous day's readings and open "
        "incidents, and closed when the meter recovers. Each day's view of its incidents is stored in "
        "faulty_incident_days; the view faulty_meter_incidents keeps each incident's latest state, so "
        "re-running a day never duplicates one."
    ),
)
INCIDENTS_CHECK = daily_check(
    NEW_FAULTY_INCIDENTS,
    INCIDENTS,
    description="Warns with the list of faulty-meter incidents that began on this day.",
)


def read_previous_open(store: BlobStore, day: date) -> pl.DataFrame | None:
    return lake.read_parquet_if_exists(store, lake.layer_key("faulty_incidents", day - timedelta(days=1)))


def materialize_incidents(
    context: dg.AssetExecutionContext,
    store: BlobStore,
    warehouse: Warehouse,
    config: RulesConfig,
    day: date,
    made: DayIncidents | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """faulty_meter_incidents for ``day``: ``made`` (worked out from the flagged slices the step
    read anyway) when what it was made from is still current once the day has its turn, else from
    the flagged layer.

    A day's incidents carry on into the next day's, so a day that changes (a late file, or days run
    out of order) recomputes the days after it that were already computed, one after another, until
    one comes out as it was: the registry never keeps a stuck period twice, nor loses one that
    crossed into a day computed first. Days take their turn (``Warehouse.exclusive``), and a chain
    cut short is finished by the next run of any day."""
    # One day's incidents at a time across runs: a day reads the previous day's and may rewrite the
    # next ones, so two days side by side (warehouse pools above 1 on PostgreSQL) would each work
    # from what the other is replacing.
    with warehouse.exclusive("faulty_meter_incidents"):
        # First the chains an earlier run left unfinished: the days they rewrite may be this one's.
        for marker in list(store.list(lake.INCIDENTS_CARRY)):
            pending = date.fromisoformat(marker.key.rsplit("/", 1)[-1].removesuffix(".json"))
            stored = lake.read_parquet_if_exists(store, lake.layer_key("faulty_incidents", pending))
            if stored is None:
                store.delete(marker.key)
            else:
                _carry_forward(store, warehouse, config, pending, stored, whole=True)
        previous_open = read_previous_open(store, day)
        if made is not None and made.failed is not None:
            context.log.warning(f"Incidents of {day} made again from the flagged layer: {made.failed!r}")
        if made is not None and made.made_from(store, day, previous_open):
            found = made.result()
        else:
            found = _incidents_of_day(store, day, config, previous_open)
        _publish_incidents(store, warehouse, day, found)
        lake.mark_day_done(store, day, "faulty_meter_incidents")
        carried = _carry_forward(store, warehouse, config, day, found)
    if carried:
        context.log.info(
            f"Incidents of {day} carried on into the days after it: {', '.join(map(str, carried))}"
        )
    known = (
        previous_open.select(incidents.KEY)
        if previous_open is not None
        else found.clear().select(incidents.KEY)
    )
    new = found.join(known, on=list(incidents.KEY), how="anti")
    yield dg.MaterializeResult(
        asset_key=INCIDENTS,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(found.height),
            "open_incidents": dg.MetadataValue.int(found.filter(pl.col("status") == incidents.OPEN).height),
            "new_incidents": dg.MetadataValue.int(new.height),
        },
    )
    yield dg.AssetCheckResult(
        asset_key=INCIDENTS,
        check_name=NEW_FAULTY_INCIDENTS,
        passed=new.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "new_incidents": new.height,
            "incidents": dg.MetadataValue.md(
                markdown_table(new.select("meter_id", "start_ts", "status", "duration_hours").head(50))
            ),
        },
    )


def flagged_counts(readings: pl.DataFrame) -> dict[str, int]:
    """The flagged readings' counts daily_quality reports (add up over slices)."""
    return readings.select(
        rows=pl.len(), missing=pl.col("is_missing").sum(), anomalies=pl.col("is_anomaly").sum()
    ).row(0, named=True)


def materialize_quality(
    store: BlobStore,
    warehouse: Warehouse,
    config: RulesConfig,
    day: date,
    flagged: dict[str, int] | None = None,
    estimated_intervals: int | None = None,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """daily_quality for ``day``: the flagged readings' counts and the estimated intervals as the
    step that made the estimates counted them, or (None) read from what was last published."""
    stats = lake.read_json(store, lake.validation_stats_key(day))
    reasons = stats["reasons"]
    if flagged is None:
        with lake.local_copy(
            store, lake.handover_key(store, lake.layer_key("flagged_anomalies", day))
        ) as flagged_path:
            flagged = (
                lake.scan_layer(flagged_path)
                .select("is_missing", "is_anomaly")
                .collect()
                .pipe(flagged_counts)
            )
    if estimated_intervals is None:
        with lake.local_copy(store, lake.estimated_key(day)) as estimated_path:
            estimated_intervals = (
                pl.scan_parquet(estimated_path)
                .filter(pl.col("quality_code").is_in(vee.ESTIMATED_CODES))
                .select(pl.len())
                .collect()
                .item()
            )
    periods = lake.read_parquet(store, lake.layer_key("faulty_periods", day))
    quarantined = sum(reasons.values())
    row = {
        "reading_date": day,
        "rows_in": stats["rows_in"],
        "rows_kept": flagged["rows"],
        "rows_quarantined": quarantined,
        "rows_collapsed": stats["rows_collapsed"],
        "invalid_rows": quarantined,
        "invalid_units": reasons[INVALID_UNIT],
        "invalid_timestamps": reasons[INVALID_TIMESTAMP] + reasons[TIMESTAMP_OUT_OF_RANGE],
        "conflicting_duplicates": reasons[CONFLICTING_DUPLICATE],
        "negative_values": reasons[NEGATIVE_VALUE],
        "missing_values": int(flagged["missing"]),
        "anomalies": int(flagged["anomalies"]),
        "faulty_meters": periods.get_column("meter_id").n_unique(),
        "estimated_intervals": int(estimated_intervals),
    }
    warehouse.replace_day("daily_quality", day, pl.DataFrame([row]))
    lake.mark_day_done(store, day, "daily_quality")
    window_start = day - timedelta(days=config.drift_window_days)
    history = warehouse.query(
        "SELECT reading_date, rows_in, anomalies, invalid_rows FROM daily_quality "
        "WHERE reading_date >= ? AND reading_date < ?",
        [window_start, day],
    )
    findings = drift.drift_findings(
        history if history.height else pl.DataFrame(schema=drift.DAY_STATS_SCHEMA), row, config
    )
    yield dg.MaterializeResult(
        asset_key=QUALITY,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(1),
            **{k: dg.MetadataValue.int(v) for k, v in row.items() if k != "reading_date"},
        },
    )
    drifted = findings.filter(pl.col("drifted"))
    yield dg.AssetCheckResult(
        asset_key=QUALITY,
        check_name=QUALITY_DRIFT,
        passed=drifted.height == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "drifted_rules": ", ".join(drifted.get_column("rule").to_list()) or "none",
            "findings": dg.MetadataValue.md(markdown_table(findings)),
        },
    )
