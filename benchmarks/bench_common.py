"""Helpers the benchmark's orchestrator (run.py), its worker (worker.py) and s3_scale.py share:
the S3 endpoint (moto's server in its own process), the machine description, a Dagster instance on a
temporary DAGSTER_HOME, and per-step timings read back from the Dagster event log."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("GREENSTREAM_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory in MB (Linux reports ru_maxrss in KB). For RUSAGE_CHILDREN: the
    largest of the waited-for children, not their sum."""
    return resource.getrusage(who).ru_maxrss / 1024


def write_result(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    module = sys.modules.get("greenstream_assets")
    payload = {
        **payload,
        "peak_rss_self_mb": peak_rss_mb(),
        "peak_rss_children_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        # Which copy of the product ran: the run's snapshot, or the repository.
        "greenstream_assets_from": getattr(module, "__file__", None),
    }
    Path(path).write_text(json.dumps(payload, indent=1, default=str))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> subprocess.Popen:
    """moto's S3 server in its own process, and the AWS variables that point boto3 at it."""
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
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def stop_moto(proc: subprocess.Popen) -> float:
    """Stop the server; return its peak RSS in MB (it is this process's only waited-for child)."""
    proc.terminate()
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_maxrss / 1024


def dagster_home(path: Path) -> Path:
    """A fresh DAGSTER_HOME with the project's local instance config (SQLite, pools of 1): what
    `greenstream run` uses on a laptop."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "greenstream_assets" / "dagster_local.yaml", path / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def run_timings(instance: Any) -> list[dict[str, Any]]:
    """Every run on ``instance``, oldest first: job, partition, wall from RUN_START to its end, and
    each step's wall from STEP_START to STEP_SUCCESS/STEP_FAILURE, read from the event log."""
    import dagster as dg

    kinds = {
        dg.DagsterEventType.RUN_START,
        dg.DagsterEventType.RUN_SUCCESS,
        dg.DagsterEventType.RUN_FAILURE,
        dg.DagsterEventType.STEP_START,
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
    }
    runs = []
    for record in reversed(instance.get_run_records()):
        run = record.dagster_run
        start = end = None
        steps: dict[str, dict[str, float]] = {}
        for entry in instance.all_logs(run.run_id, of_type=kinds):
            kind = entry.dagster_event.event_type
            if kind == dg.DagsterEventType.RUN_START:
                start = entry.timestamp
            elif kind in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
                end = entry.timestamp
            elif kind == dg.DagsterEventType.STEP_START:
                steps.setdefault(entry.step_key, {})["start"] = entry.timestamp
            else:
                steps.setdefault(entry.step_key, {})["end"] = entry.timestamp
        runs.append(
            {
                "job": run.job_name,
                "partition": run.tags.get("dagster/partition"),
                "status": run.status.value,
                "create_ts": record.create_timestamp.timestamp(),
                "start_ts": start,
                "end_ts": end,
                "wall_s": (end - start) if start and end else None,
                "steps": {
                    key: {"start": v.get("start"), "wall_s": v["end"] - v["start"]}
                    for key, v in steps.items()
                    if "start" in v and "end" in v
                },
            }
        )
    return runs


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    flags_mhz = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("cpu MHz") and not flags_mhz:
                flags_mhz = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    # Read from the installed metadata, not by importing: the orchestrator stays small, so the
    # processes it starts begin small too.
    versions = {}
    for module in ("polars", "duckdb", "dagster", "pandas", "pyarrow", "numpy", "pandera", "psycopg", "moto"):
        try:
            versions[module] = metadata.version(module)
        except metadata.PackageNotFoundError:
            versions[module] = "not installed"
    try:
        pg = subprocess.run(
            [sys.executable, "-c", f"import psycopg; print(psycopg.connect({PG_URL!r}).info.server_version)"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
        versions["postgresql_server"] = f"{int(pg) // 10000}.{int(pg) % 10000}" if pg else "unreachable"
    except (subprocess.SubprocessError, ValueError):
        versions["postgresql_server"] = "unreachable"
    return {
        "cpu": cpu,
        "cpu_mhz": flags_mhz,
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_at_start": os.getloadavg(),
        "versions": versions,
    }
