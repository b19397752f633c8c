"""S3 at production scale: a sensor tick over 50,000 new objects, and a day of 50,000 per-meter files
read with concurrent requests, against an S3 endpoint (moto's server in its own process, or a real
one through AWS_ENDPOINT_URL and GREENSTREAM_BENCH_BUCKET). moto's own request rate bounds what the
pipeline can reach, so it is measured alone first (raw GETs, no pipeline) as the reference.

    python benchmarks/s3_scale.py --meters 50000                # generate the day's files itself
    python benchmarks/s3_scale.py --from-dir DIR --json-out F   # upload existing files (run.py)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
from bench_common import peak_rss_mb, start_moto, stop_moto

from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.defs.sensors import landing_zone_sensor
from greenstream_assets.generate import Defects, readings_frame
from greenstream_assets.storage.s3 import S3BlobStore

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The ingestion's fetch concurrency (ingestion.ingest_new_files, max_workers).
PIPELINE_THREADS = 16


class RequestCounter:
    """Counts the pipeline's S3 calls by operation (wraps the blob store's methods)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        for name in ("read", "write", "exists", "delete"):
            self._wrap(name)
        original_list = S3BlobStore.list
        counter = self

        def listing(store: S3BlobStore, prefix: str = ""):
            counter.add("list (objects listed)", 0)
            for info in original_list(store, prefix):
                counter.add("list (objects listed)")
                yield info

        S3BlobStore.list = listing  # type: ignore[method-assign]

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def _wrap(self, name: str) -> None:
        original = getattr(S3BlobStore, name)
        counter = self

        def wrapped(store: S3BlobStore, *args: Any, **kwargs: Any) -> Any:
            counter.add(name)
            return original(store, *args, **kwargs)

        setattr(S3BlobStore, name, wrapped)

    def take(self) -> dict[str, int]:
        with self.lock:
            taken = dict(self.counts)
            self.counts.clear()
        return taken


def day_bodies(args: argparse.Namespace) -> dict[str, bytes]:
    if args.from_dir:
        root = Path(args.from_dir)
        return {
            f"landing/{p.relative_to(root).as_posix()}": p.read_bytes() for p in sorted(root.rglob("*.csv"))
        }
    frame = readings_frame(args.meters, args.day, 15, Defects(broken_files=0), seed=1)
    bodies = {}
    for (meter,), part in frame.partition_by("meter_id", as_dict=True).items():
        buffer = io.BytesIO()
        part.write_csv(buffer)
        bodies[f"landing/{args.day}/{meter}.csv"] = buffer.getvalue()
    return bodies


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def measure(args: argparse.Namespace) -> dict[str, Any]:
    moto = None if os.environ.get("GREENSTREAM_BENCH_BUCKET") else start_moto()
    client = boto3.client("s3")
    bucket = os.environ.get("GREENSTREAM_BENCH_BUCKET") or f"bench-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {
        "endpoint": "moto server (own process)" if moto else os.environ.get("AWS_ENDPOINT_URL", "AWS")
    }
    try:
        if moto:
            client.create_bucket(Bucket=bucket)
        bodies = day_bodies(args)
        keys = list(bodies)
        rows = sum(body.count(b"\n") - 1 for key, body in bodies.items() if "/broken-" not in key)

        def put(kv: tuple[str, bytes]) -> None:
            client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1])

        with ThreadPoolExecutor(32) as pool:
            _, upload_s = timed(lambda: list(pool.map(put, bodies.items())))

        # The reference: moto's raw GET rate, nothing else (no hashing, parsing or backup PUTs).
        def get(key: str) -> int:
            return len(client.get_object(Bucket=bucket, Key=key)["Body"].read())

        # The listing alone (what any tick must do first): 1,000 keys per page, pages one by one.
        def list_all() -> int:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="landing/")
            return sum(len(page.get("Contents", [])) for page in pages)

        listed, list_s = timed(list_all)
        assert listed == len(keys), (listed, len(keys))
        out.update(raw_list_s=list_s)

        sample = keys[: min(len(keys), args.get_sample)]
        with ThreadPoolExecutor(PIPELINE_THREADS) as pool:
            _, get_concurrent_s = timed(lambda: list(pool.map(get, sample)))
        sequential = keys[: min(len(keys), args.sequential_sample)]
        _, get_sequential_s = timed(lambda: [get(k) for k in sequential])
        out.update(
            objects=len(keys),
            rows=rows,
            csv_mb=sum(map(len, bodies.values())) / 1e6,
            upload_s=upload_s,
            put_rate=len(keys) / upload_s,
            raw_get_sample=len(sample),
            raw_get_concurrent_s=get_concurrent_s,
            raw_get_rate_concurrent=len(sample) / get_concurrent_s,
            raw_get_sequential_sample=len(sequential),
            raw_get_rate_sequential=len(sequential) / get_sequential_s,
        )
        bodies.clear()  # the pipeline reads them back from S3

        counter = RequestCounter()
        with dg.instance_for_test() as instance:
            storage = StorageResource(
                landing=f"s3://{bucket}/landing",
                lake=f"s3://{bucket}/lake",
                warehouse=str(Path(args.scratch) / f"w-{uuid.uuid4().hex[:6]}.duckdb"),
            )
            defs = build_definitions({"storage": storage})
            context = dg.build_sensor_context(
                instance=instance, resources={"storage": storage}, definitions=defs
            )
            result, out["tick_s"] = timed(lambda: landing_zone_sensor(context))
            out["tick_requests"] = counter.take()
            assert [r.job_name for r in result.run_requests] == ["ingest_landing_job"], result

            ingest, out["ingest_s"] = timed(
                lambda: defs.resolve_job_def("ingest_landing_job").execute_in_process(
                    instance=instance, run_config=QUIET
                )
            )
            assert ingest.success
            out["ingest_requests"] = counter.take()

            context = dg.build_sensor_context(
                instance=instance, resources={"storage": storage}, definitions=defs, cursor=result.cursor
            )
            second, out["tick2_s"] = timed(lambda: landing_zone_sensor(context))
            out["tick2_requests"] = counter.take()
            assert [r.partition_key for r in second.run_requests] == [args.day.isoformat()], second

            day, out["day_s"] = timed(
                lambda: defs.resolve_job_def("daily_readings_job").execute_in_process(
                    instance=instance, partition_key=args.day.isoformat(), run_config=QUIET
                )
            )
            assert day.success
            out["day_requests"] = counter.take()
        out["peak_rss_mb"] = peak_rss_mb()
    finally:
        if moto:
            out["moto_peak_rss_mb"] = stop_moto(moto)
    return out


def render(out: dict[str, Any]) -> str:
    objects, rows = out["objects"], out["rows"]
    lines = [
        f"objects: {objects:,} per-meter files, {rows:,} rows, {out['csv_mb']:.0f} MB of CSV ({out['endpoint']})",
        f"reference, raw GETs alone: {out['raw_get_rate_concurrent']:,.0f} objects/s with {PIPELINE_THREADS} threads "
        f"({out['raw_get_sample']:,} objects), {out['raw_get_rate_sequential']:,.0f} objects/s one after another; "
        f"PUTs (upload, 32 threads): {out['put_rate']:,.0f}/s; listing all {objects:,} keys alone: "
        f"{out.get('raw_list_s', float('nan')):.1f} s",
        f"{'step':<60}{'seconds':>10}{'objects/s':>12}{'rows/s':>12}",
    ]
    for name, key in [
        ("upload (setup, 32 concurrent PUTs)", "upload_s"),
        (f"sensor tick: list + compare with ledger, {objects:,} new objects", "tick_s"),
        ("ingestion: concurrent GETs, backup PUTs, parse, stage by day", "ingest_s"),
        ("sensor tick after ingestion: request the day", "tick2_s"),
        ("day run: raw -> table, archive, reports (lake on S3)", "day_s"),
    ]:
        seconds = out[key]
        lines.append(f"{name:<60}{seconds:>10.1f}{objects / seconds:>12,.0f}{rows / seconds:>12,.0f}")
    for key in ("tick_requests", "ingest_requests", "tick2_requests", "day_requests"):
        lines.append(f"{key}: " + ", ".join(f"{k}={v:,}" for k, v in sorted(out[key].items())))
    lines.append(
        f"peak RSS: this process {out['peak_rss_mb']:,.0f} MB, moto server {out.get('moto_peak_rss_mb', 0):,.0f} MB"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=50_000)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2024, 3, 4))
    parser.add_argument("--from-dir", help="upload the .csv files under this folder instead of generating")
    parser.add_argument("--get-sample", type=int, default=10_000, help="objects in the raw GET reference")
    parser.add_argument("--sequential-sample", type=int, default=500)
    parser.add_argument("--scratch", default="/tmp")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    out = measure(args)
    print(render(out))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
