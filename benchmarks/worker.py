"""One measured variant of the benchmark, run in a fresh process so that its peak memory is its own.

    python benchmarks/worker.py VARIANT '{"param": ...}' RESULT.json

run.py starts it once per variant and run; the result (timings, row counts, per-step figures) is
written to RESULT.json, and the parent reads the process's peak RSS from os.wait4.
"""

from __future__ import annotations

import gc
import importlib
import json
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from bench_common import PG_URL, dagster_home, run_timings, start_moto, stop_moto, write_result


def landing_files(landing: Path, include_broken: bool) -> list[Path]:
    files = sorted(p for p in landing.rglob("*.csv") if p.is_file())
    return files if include_broken else [p for p in files if not p.name.startswith("broken-")]


# --------------------------------------------------------------------------------------------- data


def generate(p: dict[str, Any]) -> dict[str, Any]:
    """The day in two shapes (24 hourly batch files; one file per meter), the backfill week, and
    the day's raw rows as the product stages them (for the rules-only comparison)."""
    import polars as pl

    from greenstream_assets.generate import Defects, write_day
    from greenstream_assets.rules.files import RejectedFile, read_meter_file
    from greenstream_assets.storage.blobs import LocalBlobStore

    class PlainFolder(LocalBlobStore):
        """Set-up only: the generator's files without an fsync each (50,000 of them)."""

        def write(self, key: str, data: bytes) -> None:
            path = self._path(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    data = Path(p["data"])
    day0 = date.fromisoformat(p["day"])
    meters, seed = p["meters"], p["seed"]
    started = time.perf_counter()
    write_day(PlainFolder(data / "batch"), meters, day0, 15, "batch", Defects(), seed)
    write_day(PlainFolder(data / "per-meter"), meters, day0, 15, "per-meter", Defects(), seed)
    for offset in range(p["days"]):
        day = day0 + timedelta(days=offset)
        write_day(PlainFolder(data / "week"), meters, day, 15, "batch", Defects(), seed + offset)

    shapes = {}
    for shape in ("batch", "per-meter", "week"):
        files = landing_files(data / shape, include_broken=True)
        shapes[shape] = {
            "files": len(files),
            "bytes": sum(f.stat().st_size for f in files),
            "rows": sum(f.read_bytes().count(b"\n") - 1 for f in files if not f.name.startswith("broken-")),
        }
    frames = []
    for path in landing_files(data / "batch", include_broken=True):
        try:
            frames.append(read_meter_file(path.read_bytes(), path.relative_to(data / "batch").as_posix()))
        except RejectedFile:
            continue
    raw = pl.concat(frames)
    raw.write_parquet(data / "raw.parquet")
    return {"shapes": shapes, "raw_rows": raw.height, "wall_s": time.perf_counter() - started}


# ------------------------------------------------------------------------------------ (a) I/O floor


def floor(p: dict[str, Any]) -> dict[str, Any]:
    """Polars reads the CSVs, writes them as one Parquet file (zstd, as the archive) and loads the
    same rows into a fresh DuckDB table. Nothing else."""
    import duckdb
    import polars as pl

    files = [str(f) for f in landing_files(Path(p["landing"]), include_broken=False)]
    out = Path(p["scratch"])
    out.mkdir(parents=True, exist_ok=True)
    schema = {
        "meter_id": pl.String,
        "timestamp": pl.String,
        "energy_value": pl.Float64,
        "energy_unit": pl.String,
    }
    gc.collect()
    t0 = time.perf_counter()
    # One contiguous frame: a scan over 50,000 files otherwise hands DuckDB 50,000 small chunks.
    frame = pl.scan_csv(files, schema=schema).collect().rechunk()
    t1 = time.perf_counter()
    frame.write_parquet(out / "part-0.parquet", compression="zstd", statistics=True)
    t2 = time.perf_counter()
    conn = duckdb.connect(str(out / "floor.duckdb"))
    conn.register("incoming_rows", frame.to_arrow())
    conn.execute("CREATE TABLE meter_readings AS SELECT * FROM incoming_rows")
    conn.close()
    t3 = time.perf_counter()
    return {
        "wall_s": t3 - t0,
        "rows": frame.height,
        "files": len(files),
        "parts": {"read_csv": t1 - t0, "write_parquet": t2 - t1, "duckdb_load": t3 - t2},
    }


# ------------------------------------------------------------------------- rules only (no I/O)


def rules_polars(p: dict[str, Any]) -> dict[str, Any]:
    """The product's rule book: validate_readings (rules 1-4, parsing) + flag_readings (rules 4-5,
    enrichment) on the day's raw text rows, in memory."""
    import polars as pl

    from greenstream_assets.rules.config import RulesConfig
    from greenstream_assets.rules.flagging import flag_readings
    from greenstream_assets.rules.validation import validate_readings

    raw = pl.read_parquet(p["raw"])
    config, day = RulesConfig(), date.fromisoformat(p["day"])
    gc.collect()
    t0 = time.perf_counter()
    result = validate_readings(raw, config, day)
    t1 = time.perf_counter()
    flagged, periods = flag_readings(result.cleansed, config)
    t2 = time.perf_counter()
    reasons = {k: v for k, v in sorted(result.reason_counts().items()) if v}
    return {
        "wall_s": t2 - t0,
        "rows": raw.height,
        "parts": {"validate": t1 - t0, "flag_enrich": t2 - t1},
        "counts": {
            "kept": result.cleansed.height,
            "quarantined": result.quarantined.height,
            "collapsed": result.collapsed_rows,
            "missing": int(flagged.get_column("is_missing").sum()),
            "anomalies": int(flagged.get_column("is_anomaly").sum()),
            "faulty_readings": int(flagged.get_column("is_faulty").sum()),
            "faulty_periods": periods.height,
            "peak_period_rows": int(flagged.get_column("is_peak_period").sum()),
            "reasons": reasons,
        },
    }


def rules_pandas(p: dict[str, Any]) -> dict[str, Any]:
    """The pandas baseline on the same rows (loaded as pandas' default dtypes, not timed)."""
    import pandas as pd
    import pandas_baseline as base

    raw = pd.read_parquet(p["raw"])
    config, day = base.Config(), date.fromisoformat(p["day"])
    gc.collect()
    t0 = time.perf_counter()
    cleansed, quarantined, collapsed = base.validate(raw, config, day)
    t1 = time.perf_counter()
    flagged, periods = base.flag(cleansed, config)
    t2 = time.perf_counter()
    return {
        "wall_s": t2 - t0,
        "rows": len(raw),
        "parts": {"validate": t1 - t0, "flag_enrich": t2 - t1},
        "counts": base.counts(cleansed, quarantined, collapsed, flagged, periods),
    }


# ----------------------------------------------------------- end to end without an orchestrator


def pandas_pipeline(p: dict[str, Any]) -> dict[str, Any]:
    """(b) end to end: pandas reads every file (rule 6), applies the rules, writes the Parquet
    archive and loads the table into DuckDB: what a script without Dagster would do."""
    import duckdb
    import pandas as pd
    import pandas_baseline as base

    landing = Path(p["landing"])
    out = Path(p["scratch"])
    out.mkdir(parents=True, exist_ok=True)
    config, day = base.Config(), date.fromisoformat(p["day"])
    gc.collect()
    t0 = time.perf_counter()
    frames = []
    for path in landing_files(landing, include_broken=True):
        try:
            frames.append(base.read_meter_csv(path.read_bytes(), path.relative_to(landing).as_posix()))
        except base.RejectedFile:
            continue
    raw = pd.concat(frames, ignore_index=True)
    t1 = time.perf_counter()
    cleansed, quarantined, collapsed = base.validate(raw, config, day)
    flagged, _ = base.flag(cleansed, config)
    t2 = time.perf_counter()
    flagged["reading_date"] = pd.Timestamp(day)
    flagged.to_parquet(out / "part-0.parquet", compression="zstd", index=False)
    quarantined.to_json(out / "quarantine.jsonl", orient="records", lines=True)
    t3 = time.perf_counter()
    conn = duckdb.connect(str(out / "pandas.duckdb"))
    conn.register("incoming_rows", flagged)
    conn.execute(
        "CREATE TABLE meter_readings AS SELECT * REPLACE (CAST(local_date AS DATE) AS local_date, "
        "CAST(reading_date AS DATE) AS reading_date) FROM incoming_rows"
    )
    conn.close()
    t4 = time.perf_counter()
    return {
        "wall_s": t4 - t0,
        "rows": len(raw),
        "parts": {
            "read_csv": t1 - t0,
            "rules": t2 - t1,
            "write_parquet_jsonl": t3 - t2,
            "duckdb_load": t4 - t3,
        },
    }


def product_no_dagster(p: dict[str, Any]) -> dict[str, Any]:
    """The product's own functions for one day, called directly: read_meter_file per file, the
    rules, the archive through the lake, the table through DuckDBWarehouse.replace_day. What the
    day costs before Dagster, checks, layers and the analytics assets."""
    import polars as pl

    from greenstream_assets.rules.config import RulesConfig
    from greenstream_assets.rules.files import RejectedFile, read_meter_file
    from greenstream_assets.rules.flagging import flag_readings
    from greenstream_assets.rules.validation import validate_readings
    from greenstream_assets.storage import lake
    from greenstream_assets.storage.blobs import LocalBlobStore
    from greenstream_assets.storage.warehouse import TABLES, DuckDBWarehouse

    landing = Path(p["landing"])
    out = Path(p["scratch"])
    config, day = RulesConfig(), date.fromisoformat(p["day"])
    store = LocalBlobStore(out / "lake")
    gc.collect()
    t0 = time.perf_counter()
    frames = []
    for path in landing_files(landing, include_broken=True):
        try:
            frames.append(read_meter_file(path.read_bytes(), path.relative_to(landing).as_posix()))
        except RejectedFile:
            continue
    raw = pl.concat(frames)
    t1 = time.perf_counter()
    result = validate_readings(raw, config, day)
    flagged, _ = flag_readings(result.cleansed, config)
    rows = flagged.with_columns(reading_date=pl.lit(day)).select(
        name for name, _, _ in TABLES["meter_readings"]
    )
    t2 = time.perf_counter()
    lake.write_parquet(store, lake.archive_key(day), rows.drop("reading_date"))
    lake.write_jsonl(store, lake.quarantine_key(day), result.quarantined)
    t3 = time.perf_counter()
    warehouse = DuckDBWarehouse(str(out / "warehouse.duckdb"))
    warehouse.ensure_schema()
    warehouse.replace_day("meter_readings", day, rows)
    t4 = time.perf_counter()
    return {
        "wall_s": t4 - t0,
        "rows": raw.height,
        "parts": {
            "read_files": t1 - t0,
            "rules": t2 - t1,
            "write_archive_quarantine": t3 - t2,
            "duckdb_load": t4 - t3,
        },
    }


# ------------------------------------------------------------------------ (c) (d) (e) through Dagster


class Probe:
    """Profiling only: wraps the lake's readers/writers, the pandera checks and the warehouse so
    each call's wall time and object are recorded (outermost call per thread), to be attributed to
    the step whose STEP_START..STEP_SUCCESS window holds it."""

    def __init__(self) -> None:
        import threading

        self.calls: list[dict[str, Any]] = []
        self.local = threading.local()

    def wrap(self, owner: Any, name: str, category: str, key_arg: int | None = None) -> None:
        original = getattr(owner, name)
        probe = self

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(probe.local, "depth", 0)
            probe.local.depth = depth + 1
            start = time.time()
            try:
                return original(*args, **kwargs)
            finally:
                probe.local.depth = depth
                if depth == 0:
                    key = str(args[key_arg]) if key_arg is not None and len(args) > key_arg else ""
                    probe.calls.append(
                        {"category": category, "key": key, "start": start, "wall_s": time.time() - start}
                    )

        setattr(owner, name, wrapped)

    def install(self) -> None:
        from greenstream_assets.defs import quality
        from greenstream_assets.storage import blobs, lake
        from greenstream_assets.storage import warehouse as wh

        for name, category in [
            ("read_parquet", "lake.read_parquet"),
            ("write_parquet", "lake.write_parquet"),
            ("write_jsonl", "lake.write_jsonl"),
            ("read_json", "lake.read_json"),
            ("write_json", "lake.write_json"),
        ]:
            self.wrap(lake, name, category, key_arg=1)
        from greenstream_assets.defs import checks

        # Pandera, a slice at a time (checks.SchemaCheck.add), as every step evaluates it.
        self.wrap(checks.SchemaCheck, "add", "pandera check (per slice)")
        self.wrap(lake.SliceWriter, "write", "lake.SliceWriter.write (a slice's row group)")
        self.wrap(lake.JsonLinesWriter, "write", "lake.JsonLinesWriter.write (quarantine)")
        self.wrap(blobs.LocalBlobStore, "write_file", "store.write_file (publish a layer)", key_arg=1)
        self.wrap(wh.DuckDBWarehouse, "replace_day", "warehouse.replace_day", key_arg=1)
        self.wrap(wh.DuckDBWarehouse, "read_day", "warehouse.read_day", key_arg=1)
        self.wrap(wh.DuckDBWarehouse, "ensure_schema", "warehouse.ensure_schema")
        self.wrap(wh.DuckDBWarehouse, "query", "warehouse.query")
        # Raw backups and failed files: the store's own writes outside the lake helpers.
        self.wrap(blobs.LocalBlobStore, "write", "store.write (raw backup, fsync)", key_arg=1)
        self.wrap(blobs.LocalBlobStore, "read", "store.read", key_arg=1)
        # The rule book's entry points, as the assets call them.
        from greenstream_assets import ingestion
        from greenstream_assets.rules import features, incidents, meter_reports, vee

        self.wrap(ingestion, "read_meter_text", "rules: read_meter_text (parse CSV, file by file)")
        self.wrap(ingestion, "read_meter_files", "rules: read_meter_files (plain files, a chunk at once)")
        self.wrap(ingestion, "_assign_days", "rules: _assign_days (parse timestamps)")
        self.wrap(ingestion, "_single_day", "rules: _single_day (a chunk's one day, distinct timestamps)")
        self.wrap(quality, "validate_readings", "rules: validate_readings")
        self.wrap(quality, "flag_readings", "rules: flag_readings")
        self.wrap(vee, "estimate_coded", "rules: vee.estimate")
        self.wrap(vee, "completeness", "rules: vee.completeness")
        self.wrap(features, "hourly_features", "rules: features.hourly_features")
        self.wrap(incidents, "day_incidents", "rules: incidents.day_incidents")
        self.wrap(meter_reports, "meter_daily_report", "rules: meter_reports.meter_daily_report")


class RssSampler:
    """Samples this process's resident memory every ``interval`` seconds on a thread, so the peak
    can be attributed to the step (or day) that reached it."""

    def __init__(self, interval: float = 0.1) -> None:
        import os
        import threading

        self.samples: list[tuple[float, float]] = []
        self.page_mb = os.sysconf("SC_PAGE_SIZE") / 1024 / 1024
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        with open("/proc/self/statm") as statm:
            while not self.stop_event.is_set():
                statm.seek(0)
                self.samples.append((time.time(), int(statm.read().split()[1]) * self.page_mb))
                self.stop_event.wait(interval)

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()

    def peak_between(self, start: float | None, end: float | None) -> float | None:
        if start is None or end is None:
            return None
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside) if inside else None


def dagster_day(p: dict[str, Any]) -> dict[str, Any]:
    """What a sensor tick launches, through Dagster on a real instance: the ingestion run, then a
    daily_readings_job run per stale day (raw -> table -> archive -> reports, checks included),
    in-process as `greenstream run` executes them. Timed from launch to the last run's success."""
    t_start = time.perf_counter()
    import dagster as dg

    from greenstream_assets.defs.resources import StorageResource
    from greenstream_assets.runner import run_landing_zone

    # The code location is loaded before a run starts, as a run worker (or `greenstream run`) loads
    # it before its first run: counted in import_s with the rest of the imports, not in the day.
    importlib.import_module("greenstream_assets.definitions")
    import_s = time.perf_counter() - t_start
    scratch = Path(p["scratch"])
    dagster_home(scratch / "dagster_home")
    instance = dg.DagsterInstance.get()
    moto = None
    schema = None
    extra: dict[str, Any] = {}
    moto_info: dict[str, float] = {}
    try:
        if p.get("backend") == "pg_s3":
            import uuid

            import boto3

            moto = start_moto()
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            client = boto3.client("s3")
            client.create_bucket(Bucket=bucket)
            landing = Path(p["landing"])
            t0 = time.perf_counter()
            for path in landing_files(landing, include_broken=True):
                client.put_object(
                    Bucket=bucket,
                    Key=f"landing/{path.relative_to(landing).as_posix()}",
                    Body=path.read_bytes(),
                )
            extra["upload_setup_s"] = time.perf_counter() - t0
            schema = f"bench_{uuid.uuid4().hex[:10]}"
            storage = StorageResource(
                landing=f"s3://{bucket}/landing",
                lake=f"s3://{bucket}/lake",
                warehouse=PG_URL,
                warehouse_schema=schema,
            )
        else:
            storage = StorageResource(
                landing=p["landing"], lake=str(scratch / "lake"), warehouse=str(scratch / "warehouse.duckdb")
            )
        probe = profiler = None
        if p.get("profile"):
            import cProfile

            probe = Probe()
            probe.install()
            profiler = cProfile.Profile()
            profiler.enable()
        gc.collect()
        with RssSampler() as sampler:
            t0 = time.perf_counter()
            summary = run_landing_zone(instance=instance, resources={"storage": storage})
            wall = time.perf_counter() - t0
        if profiler:
            profiler.disable()
        if summary.failed:
            raise RuntimeError("run failed: " + "; ".join(summary.failed))
        runs = run_timings(instance)
        for run in runs:
            run["peak_rss_mb"] = sampler.peak_between(run["start_ts"], run["end_ts"])
            for timing in run["steps"].values():
                timing["peak_rss_mb"] = sampler.peak_between(
                    timing["start"], timing["start"] + timing["wall_s"]
                )
        result: dict[str, Any] = {
            "wall_s": wall,
            "import_s": import_s,
            "rows": int(summary.ingest.get("rows_staged", 0)),
            "ingest": {k: int(v) for k, v in summary.ingest.items()},
            "days": {
                d.isoformat(): {k: str(v) for k, v in values.items()} for d, values in summary.days.items()
            },
            "runs": runs,
            "moto": moto_info,
            **extra,
        }
        if probe and profiler:
            result["probe"] = probe.calls
            result["cprofile"] = cprofile_summary(profiler)
        return result
    finally:
        instance.dispose()
        if schema:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if moto:
            # Filled in before the caller writes the result (the dict is referenced by it).
            moto_info["peak_rss_mb"] = stop_moto(moto)


def cprofile_summary(profiler: Any) -> dict[str, list]:
    import pstats

    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "where": f"{shorten(filename)}:{line}({func})",
                "calls": calls,
                "tottime": tottime,
                "cumtime": cumtime,
            }
        )
    own = [r for r in rows if "greenstream_assets/" in r["where"] or "pandera/" in r["where"]]
    return {
        "by_tottime": sorted(rows, key=lambda r: -r["tottime"])[:30],
        "project_by_cumtime": sorted(own, key=lambda r: -r["cumtime"])[:40],
    }


def shorten(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# ------------------------------------------------------------- PostgreSQL: load vs a bare COPY


def pg_copy(p: dict[str, Any]) -> dict[str, Any]:
    """Issue 4: the day's table rows loaded by PostgresWarehouse.replace_day (staging table, COPY,
    primary key, indexes, ANALYZE, attach) against a bare COPY of the same CSV bytes into an empty
    table with no index, side by side in one process."""
    import uuid

    import polars as pl
    import psycopg
    from psycopg import sql

    from greenstream_assets.rules.config import RulesConfig
    from greenstream_assets.rules.flagging import flag_readings
    from greenstream_assets.rules.validation import validate_readings
    from greenstream_assets.storage.postgres import COPY_CHUNK_ROWS, PG_TYPES, PostgresWarehouse
    from greenstream_assets.storage.warehouse import TABLES

    day = date.fromisoformat(p["day"])
    config = RulesConfig()
    raw = pl.read_parquet(p["raw"])
    flagged, _ = flag_readings(validate_readings(raw, config, day).cleansed, config)
    columns = [name for name, _, _ in TABLES["meter_readings"]]
    rows = flagged.with_columns(reading_date=pl.lit(day)).select(columns)
    del raw, flagged
    t0 = time.perf_counter()
    chunks = [
        rows.slice(offset, COPY_CHUNK_ROWS).write_csv(include_header=False).encode()
        for offset in range(0, rows.height, COPY_CHUNK_ROWS)
    ]
    serialize_s = time.perf_counter() - t0
    copy_schema = f"bench_copy_{uuid.uuid4().hex[:10]}"
    wh_schema = f"bench_wh_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(copy_schema)))
            ddl = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(PG_TYPES[kind.split()[0]]))
                for name, kind, _ in TABLES["meter_readings"]
            )
            table = sql.Identifier(copy_schema, "meter_readings")
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(table, ddl))
            statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                table, sql.SQL(", ").join(map(sql.Identifier, columns))
            )
            t0 = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                for chunk in chunks:
                    copy.write(chunk)
            copy_s = time.perf_counter() - t0
            copied = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
        warehouse = PostgresWarehouse(PG_URL, schema=wh_schema)
        warehouse.ensure_schema()
        t0 = time.perf_counter()
        warehouse.replace_day("meter_readings", day, rows)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        warehouse.replace_day("meter_readings", day, rows)
        reload_s = time.perf_counter() - t0
        stored = warehouse.query("SELECT count(*) AS n FROM meter_readings").item()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for schema in (copy_schema, wh_schema):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return {
        "wall_s": load_s,
        "rows": rows.height,
        "csv_mb": sum(map(len, chunks)) / 1e6,
        "serialize_csv_s": serialize_s,
        "bare_copy_s": copy_s,
        "replace_day_first_s": load_s,
        "replace_day_again_s": reload_s,
        "copied_rows": copied,
        "stored_rows": stored,
    }


def breakdown(p: dict[str, Any]) -> dict[str, Any]:
    """Where the rule book, the checks and the ingestion spend their time, piece by piece, on the
    day's rows: each piece as the product evaluates it (eager frames), beside a prototype of a
    cheaper way to the same result where one is known. Run once; for finding hot spots, not a
    target figure. A piece whose product function changed shape is reported as failed, not fatal."""
    import hashlib
    import io

    import polars as pl

    from greenstream_assets import ingestion
    from greenstream_assets import schemas as models
    from greenstream_assets.rules import features, incidents, meter_reports, reports, vee
    from greenstream_assets.rules.config import RulesConfig
    from greenstream_assets.rules.duplicates import mark_duplicates
    from greenstream_assets.rules.enrichment import enrichment_columns
    from greenstream_assets.rules.faulty import flag_faulty
    from greenstream_assets.rules.files import RejectedFile, read_meter_file
    from greenstream_assets.rules.flagging import flag_readings
    from greenstream_assets.rules.ranges import is_anomaly
    from greenstream_assets.rules.timestamps import parse_timestamp, utc_day
    from greenstream_assets.rules.units import unit_factor, value_is_missing, value_number
    from greenstream_assets.rules.validation import validate_readings
    from greenstream_assets.storage.warehouse import TABLES

    config, day = RulesConfig(), date.fromisoformat(p["day"])
    raw = pl.read_parquet(p["raw"])
    timings: list[dict[str, Any]] = []

    def timed(area: str, name: str, fn: Any, note: str = "") -> Any:
        gc.collect()
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as err:  # the product moved on: report the piece as not measured
            timings.append({"area": area, "piece": name, "s": None, "note": f"failed: {type(err).__name__}"})
            return None
        timings.append({"area": area, "piece": name, "s": time.perf_counter() - t0, "note": note})
        return value

    # --- ingestion, per file as ingest_new_files does it (sequential here, 16 threads there)
    landing = Path(p["landing"])
    blobs = [(f.relative_to(landing).as_posix(), f.read_bytes()) for f in landing_files(landing, True)]
    timed("ingestion", "sha256 of every file", lambda: [hashlib.sha256(b).hexdigest() for _, b in blobs])

    def parse_all() -> pl.DataFrame:
        frames = []
        for key, data in blobs:
            try:
                frames.append(read_meter_file(data, key))
            except RejectedFile:
                continue
        return pl.concat(frames)

    parsed = timed("ingestion", "read_meter_file of every file", parse_all)

    def parse_bytes() -> pl.DataFrame:
        frames = []
        for key, data in blobs:
            if not key.rsplit("/", 1)[-1].startswith("broken-"):
                frames.append(pl.read_csv(data, infer_schema=False).with_columns(source_file=pl.lit(key)))
        return pl.concat(frames)

    timed("ingestion", "prototype: pl.read_csv straight on the bytes", parse_bytes)
    staged = timed(
        "ingestion",
        "_assign_days (the UTC day of every row)",
        lambda: ingestion._assign_days(parsed.with_columns(checksum=pl.lit("x")), config, date.today()),
    )
    timed(
        "ingestion",
        "partition_by day + staging Parquet (zstd, in memory)",
        lambda: [
            part.write_parquet(io.BytesIO(), compression="zstd")
            for part in staged.partition_by("day", include_key=False)
        ],
    )
    blobs = parsed = staged = None  # free the memory before the next pieces

    # --- validate_readings, piece by piece
    value = pl.col("energy_value")
    direct = timed(
        "validate",
        "parse_timestamp expression on every row (eager)",
        lambda: raw.select(ts=parse_timestamp("timestamp", config.timezone)),
    )

    def unique_then_join() -> pl.DataFrame:
        uniques = raw.select(pl.col("timestamp").unique()).with_columns(
            ts=parse_timestamp("timestamp", config.timezone)
        )
        return raw.select("timestamp").join(uniques, on="timestamp", how="left", maintain_order="left")

    joined = timed("validate", "prototype: parse the distinct strings only, join back", unique_then_join)
    if joined is not None and direct is not None:
        same = joined.get_column("ts").equals(direct.get_column("ts"))
        timings[-1]["note"] = "same values" if same else "DIFFERENT values"
    del joined, direct
    timed(
        "validate",
        "units and values: value_is_missing, value_number, unit_factor",
        lambda: raw.select(
            m=value_is_missing(value),
            n=value_number(value),
            f=unit_factor(pl.col("energy_unit"), config.unit_factors),
        ),
    )
    # Duplicate detection on its inputs as validate_readings prepares them (columns for both the
    # sort-based and the hash-based versions of mark_duplicates).
    frame = raw.with_row_index("row_order").with_columns(
        meter_id_clean=pl.col("meter_id").str.strip_chars(),
        reading_ts=parse_timestamp("timestamp", config.timezone),
        unit=pl.col("energy_unit").str.strip_chars(),
        is_missing=value_is_missing(value),
        value_num=value_number(value),
    )
    frame = frame.with_columns(
        value_key=pl.when(pl.col("is_missing"))
        .then(pl.lit("<missing>"))
        .otherwise(pl.col("value_num").cast(pl.String).fill_null(value.str.strip_chars())),
        value_text=pl.when(~pl.col("is_missing") & pl.col("value_num").is_null()).then(
            value.str.strip_chars()
        ),
        keyed=pl.col("meter_id_clean").is_not_null() & (utc_day(pl.col("reading_ts")) == pl.lit(day)),
    ).rename({"meter_id": "meter_id_raw", "meter_id_clean": "meter_id"})
    timed(
        "validate",
        "mark_duplicates (collapsed and conflicting rows), as the product has it",
        lambda: mark_duplicates(frame, "keyed"),
    )
    frame = None
    result = timed("validate", "validate_readings, whole", lambda: validate_readings(raw, config, day))
    if result is None:
        return {"wall_s": 0.0, "rows": raw.height, "timings": timings}

    # --- flag_readings, piece by piece
    cleansed = result.cleansed
    with_anomaly = cleansed.with_columns(is_anomaly(config).alias("is_anomaly"))
    faulty = timed("flag", "flag_faulty (rule 5: runs near zero)", lambda: flag_faulty(with_anomaly, config))
    if faulty is not None:
        timed(
            "flag",
            "enrichment_columns (local date, hour, peak)",
            lambda: faulty[0].with_columns(enrichment_columns(config)),
        )
    flagged = timed("flag", "flag_readings, whole", lambda: flag_readings(cleansed, config))
    if flagged is None:
        return {"wall_s": 0.0, "rows": raw.height, "timings": timings}
    flagged = flagged[0]

    # --- the pandera checks, as the asset checks run them (lazy=True: every row)
    table = flagged.with_columns(reading_date=pl.lit(day)).select(
        name for name, _, _ in TABLES["meter_readings"]
    )

    def check(model: Any, rows: pl.DataFrame) -> Any:
        import pandera.polars as pa

        try:
            return model.validate(rows, lazy=True)
        except pa.errors.SchemaErrors:
            return None

    timed("checks", "RawReadings (raw_schema) on the raw rows", lambda: check(models.RawReadings, raw))
    timed("checks", "CleansedReadings (cleansed_schema)", lambda: check(models.CleansedReadings, cleansed))
    timed("checks", "MeterReadingsTable (table_schema)", lambda: check(models.MeterReadingsTable, table))
    timed(
        "checks",
        "archive_matches_table: sort both by key and compare",
        lambda: (
            table.select("meter_id", "reading_ts")
            .sort("meter_id", "reading_ts")
            .equals(table.select("meter_id", "reading_ts").sort("meter_id", "reading_ts"))
        ),
    )

    # --- the reports and analytics of the day, on the flagged rows, no history
    timed("reports", "reports.system_peak (daily_peaks)", lambda: reports.system_peak(flagged, day))
    estimated = timed(
        "analytics", "vee.estimate (estimated_readings)", lambda: vee.estimate(flagged, None, config, day)
    )
    timed(
        "analytics", "vee.completeness (estimated_readings)", lambda: vee.completeness(flagged, day, config)
    )
    if estimated is not None:
        timed(
            "analytics",
            "meter_reports.meter_daily_report (meter_daily_peaks)",
            lambda: meter_reports.meter_daily_report(estimated, config, day),
        )
        timed(
            "analytics",
            "features.hourly_features (hourly_meter_features)",
            lambda: features.hourly_features(estimated, None, config),
        )
    timed(
        "analytics",
        "incidents.day_incidents (faulty_meter_incidents)",
        lambda: incidents.day_incidents(flagged.clear(), flagged, config, None),
    )
    timed(
        "storage",
        "write_parquet zstd of the table rows (one layer write)",
        lambda: table.write_parquet(io.BytesIO(), compression="zstd", statistics=True),
    )
    buffer = io.BytesIO()
    table.write_parquet(buffer, compression="zstd", statistics=True)
    timed(
        "storage",
        "read_parquet of the same bytes (one layer read)",
        lambda: pl.read_parquet(io.BytesIO(buffer.getvalue())),
    )
    timed("storage", "write_ndjson of the quarantine", lambda: result.quarantined.write_ndjson(io.BytesIO()))
    measured = [t["s"] for t in timings if t["s"] is not None]
    return {"wall_s": sum(measured), "rows": raw.height, "timings": timings}


VARIANTS = {
    "breakdown": breakdown,
    "generate": generate,
    "floor": floor,
    "rules_polars": rules_polars,
    "rules_pandas": rules_pandas,
    "pandas_pipeline": pandas_pipeline,
    "product_no_dagster": product_no_dagster,
    "dagster_day": dagster_day,
    "pg_copy": pg_copy,
}


def main() -> None:
    variant, params, result_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    params["result"] = result_path
    try:
        payload = VARIANTS[variant](params)
        payload["ok"] = True
    except Exception as err:  # reported in the table as a failed variant, with its reason
        import traceback

        traceback.print_exc()
        payload = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    write_result(result_path, payload)


if __name__ == "__main__":
    main()
