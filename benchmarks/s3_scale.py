"""S3 at production scale: a sensor tick over 50,000 new objects, and a day of 50,000 per-meter files
read with concurrent requests, against an S3 endpoint (moto's server in its own process, or a real
one through AWS_ENDPOINT_URL and GREENSTREAM_BENCH_BUCKET).

    python benchmarks/s3_scale.py --meters 50000
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import boto3
import dagster as dg

from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.defs.sensors import landing_zone_sensor
from greenstream_assets.generate import Defects, readings_frame


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> subprocess.Popen:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_REGION="us-east-1",
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("moto server did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--meters", type=int, default=50_000)
    parser.add_argument("--day", type=date.fromisoformat, default=date(2024, 3, 4))
    args = parser.parse_args()

    moto = None if os.environ.get("GREENSTREAM_BENCH_BUCKET") else start_moto()
    client = boto3.client("s3")
    bucket = os.environ.get("GREENSTREAM_BENCH_BUCKET") or f"bench-{uuid.uuid4().hex[:8]}"
    if moto:
        client.create_bucket(Bucket=bucket)
    try:
        frame = readings_frame(args.meters, args.day, 15, Defects(broken_files=0), seed=1)
        parts = frame.partition_by("meter_id", as_dict=True)
        bodies = {}
        for (meter,), part in parts.items():
            buffer = io.BytesIO()
            part.write_csv(buffer)
            bodies[f"landing/{args.day}/{meter}.csv"] = buffer.getvalue()
        started = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), bodies.items()))
        upload_s = time.perf_counter() - started
        total_mb = sum(map(len, bodies.values())) / 1e6

        with tempfile.TemporaryDirectory() as tmp:
            storage = StorageResource(
                landing=f"s3://{bucket}/landing", lake=f"s3://{bucket}/lake", warehouse=f"{tmp}/w.duckdb"
            )
            defs = build_definitions({"storage": storage})
            with dg.instance_for_test() as instance:
                context = dg.build_sensor_context(
                    instance=instance, resources={"storage": storage}, definitions=defs
                )
                started = time.perf_counter()
                result = landing_zone_sensor(context)
                tick_s = time.perf_counter() - started
                assert [r.job_name for r in result.run_requests] == ["ingest_landing_job"]

                quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
                started = time.perf_counter()
                ingest = defs.resolve_job_def("ingest_landing_job").execute_in_process(
                    instance=instance, run_config=quiet
                )
                ingest_s = time.perf_counter() - started
                assert ingest.success

                context = dg.build_sensor_context(
                    instance=instance, resources={"storage": storage}, definitions=defs, cursor=result.cursor
                )
                started = time.perf_counter()
                second = landing_zone_sensor(context)
                tick2_s = time.perf_counter() - started
                assert [r.partition_key for r in second.run_requests] == [args.day.isoformat()]

                started = time.perf_counter()
                day = defs.resolve_job_def("daily_readings_job").execute_in_process(
                    instance=instance, partition_key=args.day.isoformat(), run_config=quiet
                )
                day_s = time.perf_counter() - started
                assert day.success
        rows = frame.height
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"objects: {len(bodies):,} per-meter files, {rows:,} rows, {total_mb:.0f} MB of CSV")
        print(f"{'step':<58}{'seconds':>10}{'rows/s':>14}")
        for name, seconds in [
            ("upload (setup, 32 concurrent PUTs)", upload_s),
            ("sensor tick: list + compare with ledger, 50k new objects", tick_s),
            ("ingestion: concurrent GETs, backup, parse, stage by day", ingest_s),
            ("sensor tick after ingestion: request the day", tick2_s),
            ("day run: raw -> table, archive, reports (lake on S3)", day_s),
        ]:
            print(f"{name:<58}{seconds:>10.1f}{rows / seconds:>14,.0f}")
        print(f"peak RSS of this process: {peak_mb:,.0f} MB")
    finally:
        if moto:
            moto.terminate()


if __name__ == "__main__":
    main()
