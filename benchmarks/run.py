"""GreenStream at production volume, side by side with its references, in one run on the same files.

    python benchmarks/run.py                          # full scale: 50,000 meters, 3 runs, 7-day backfill
    python benchmarks/run.py --meters 2000 --runs 1   # a quick check of the harness
    python benchmarks/run.py --report-only            # re-render BENCHMARKS.md from benchmarks/results.json

Generates a full day in two shapes (24 hourly batch files; one file per meter) and a 7-day backfill,
then measures each variant in a fresh process (peak RSS read with os.wait4) and repeats the set
``--runs`` times. Figures are medians over the runs; every ratio is taken between variants of the
same run, then its median is reported. Prints a table and writes BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_common import REPO, machine_info

from greenstream_assets import ALLOCATOR_CONF

STARTING_ALLOCATOR_CONF = os.environ.get("_RJEM_MALLOC_CONF", ALLOCATOR_CONF)

HERE = Path(__file__).resolve().parent
MB = 1024

# label -> (worker variant, what it measures, shape)
VARIANTS: dict[str, tuple[str, str, str]] = {
    "a_floor_batch": ("floor", "(a) I/O floor: polars read CSV -> Parquet -> DuckDB table", "batch"),
    "a_floor_per_meter": ("floor", "(a) I/O floor, per-meter files", "per-meter"),
    "rules_polars": ("rules_polars", "rules only, product (polars): parse, 6 rules, enrichment", "in memory"),
    "rules_pandas": ("rules_pandas", "(b) rules only, pandas baseline, same rows", "in memory"),
    "b_pandas_pipeline": ("pandas_pipeline", "(b) pandas end to end: read, rules, Parquet, DuckDB", "batch"),
    "product_no_dagster": (
        "product_no_dagster",
        "product functions without Dagster: read, rules, archive, table",
        "batch",
    ),
    "c_dagster_batch": ("dagster_day", "(c) Dagster day, embedded default: ingest + day run", "batch"),
    "c_dagster_per_meter": ("dagster_day", "(c) Dagster day, embedded default, per-meter files", "per-meter"),
    "pg_copy": ("pg_copy", "PostgreSQL: replace_day vs bare COPY (same rows)", "in memory"),
    "d_dagster_pg_s3": ("dagster_day", "(d) Dagster day, PostgreSQL warehouse + S3 (moto) lake", "batch"),
    "e_backfill": ("dagster_day", "(e) 7-day backfill through Dagster, embedded default", "week"),
}
SLOW = ("d_dagster_pg_s3", "e_backfill")


def code_fingerprint(root: Path) -> dict[str, Any]:
    """A digest of the product's Python sources and the newest modification time among them."""
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        newest = max(newest, path.stat().st_mtime)
    return {
        "sha256": digest.hexdigest()[:16],
        "newest_file": datetime.fromtimestamp(newest, UTC).isoformat(timespec="seconds"),
    }


def snapshot_code(workdir: Path) -> Path:
    """Copy the product's package into the work folder; every variant imports this copy, so all runs
    measure one version of the code even while someone edits the repository."""
    target = workdir / "code"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(
        REPO / "greenstream_assets",
        target / "greenstream_assets",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return target


# Where the variants import greenstream_assets from: the snapshot, when there is one.
CODE_PATH: list[str] = []


# The pandas baseline's own dependency, installed apart from the product (see baseline_site).
BASELINE_PACKAGES = ["pandas==3.1.1"]
BASELINE_VARIANTS = {"rules_pandas", "pandas_pipeline"}
# Set by run_all: the folder the baseline variants import pandas from.
BASELINE_PATH: list[str] = []


def baseline_site(workdir: Path) -> Path:
    """A folder holding the baseline's pandas (``pip install --target``), on the PYTHONPATH of the
    baseline variants only. The product does not depend on pandas, but pandera imports it whenever
    it can (~0.2-0.4 s at every code-location load): installed in the venv, it would be measured
    in every Dagster variant although no installation of the product has it."""
    site = workdir / "baseline-site"
    marker = site / ".installed"
    if marker.exists() and marker.read_text() == " ".join(BASELINE_PACKAGES):
        return site
    shutil.rmtree(site, ignore_errors=True)
    # numpy and python-dateutil, pandas' own dependencies, are the product's (no second copy).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(site),
            *BASELINE_PACKAGES,
        ],
        check=True,
    )
    marker.write_text(" ".join(BASELINE_PACKAGES))
    return site


def product_env_has_pandas() -> bool:
    """Whether the product's own environment (this venv) can import pandas: then pandera imports it
    in every variant, and the report says so."""
    import importlib.util

    return importlib.util.find_spec("pandas") is not None


def allocator_conf() -> str:
    """The product's setting, or the operator's own (read before anything here loads polars)."""
    return STARTING_ALLOCATOR_CONF


def launch(
    label: str, variant: str, params: dict[str, Any], workdir: Path, script: str = "worker.py"
) -> dict:
    """Run one variant in a fresh process; its result plus the process's peak RSS and wall."""
    result_path = workdir / "results" / f"{label}.json"
    log_path = workdir / "logs" / f"{label}.log"
    result_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if script == "worker.py":
        cmd = [sys.executable, str(HERE / script), variant, json.dumps(params), str(result_path)]
    else:
        cmd = [sys.executable, str(HERE / script), *params["argv"], "--json-out", str(result_path)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(HERE), *CODE_PATH, str(REPO), *(BASELINE_PATH if variant in BASELINE_VARIANTS else [])]
        ),
        # Every variant, the references included, gets the allocator setting the product makes for
        # itself (greenstream_assets/__init__.py): ratios compare code, not allocator settings.
        "_RJEM_MALLOC_CONF": allocator_conf(),
    }
    print(f"[{datetime.now():%H:%M:%S}] {label} ...", flush=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    try:
        result = json.loads(result_path.read_text())
    except (OSError, json.JSONDecodeError):
        result = {"ok": False, "error": f"exit code {proc.returncode}, no result (see {log_path})"}
    if script != "worker.py" and proc.returncode == 0:
        result.setdefault("ok", True)
    result["process_wall_s"] = wall
    # The 1-minute load average around the variant: the machine is shared with other work.
    result["load_1min"] = [load_before, os.getloadavg()[0]]
    result_path.write_text(json.dumps(result, indent=1, default=str))
    # The largest of the process and its waited-for children (moto's server for (d) and S3).
    result["peak_rss_mb"] = usage.ru_maxrss / MB
    status_text = (
        f"{result.get('wall_s', 0):.1f} s" if result.get("ok") else "FAILED: " + result.get("error", "")
    )
    print(f"    {status_text}  (process {wall:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB)", flush=True)
    return result


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    data = workdir / "data"
    if args.resume:
        return resume(args, workdir, data)
    if data.exists() and not args.reuse_data:
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/run.py", *sys.argv[1:]]),
        "config": {k: (str(v) if isinstance(v, date) else v) for k, v in vars(args).items()},
        "machine": {
            **machine_info(),
            "allocator_conf": allocator_conf(),
            "pandas_in_product_env": product_env_has_pandas(),
        },
        "runs": [],
        "once": {},
    }
    if args.snapshot:
        CODE_PATH[:] = [str(snapshot_code(workdir))]
        results["code"] = {
            "snapshot": CODE_PATH[0],
            "taken": datetime.now(UTC).isoformat(timespec="seconds"),
            **code_fingerprint(Path(CODE_PATH[0]) / "greenstream_assets"),
        }
    else:
        results["code"] = {"snapshot": None, **code_fingerprint(REPO / "greenstream_assets")}
    BASELINE_PATH[:] = [str(baseline_site(workdir))]
    results["machine"]["versions"]["pandas"] = BASELINE_PACKAGES[0].split("==")[1]
    day = args.day.isoformat()
    if args.reuse_data and (data / "raw.parquet").exists():
        results["data"] = json.loads((data / "generate.json").read_text())
    else:
        gen = launch(
            "generate",
            "generate",
            {"data": str(data), "day": day, "meters": args.meters, "days": args.days, "seed": args.seed},
            workdir,
        )
        if not gen.get("ok"):
            raise SystemExit(f"generation failed: {gen.get('error')}")
        (data / "generate.json").write_text(json.dumps(gen))
        results["data"] = gen
    return measure(args, results, workdir, data)


def resume(args: argparse.Namespace, workdir: Path, data: Path) -> dict[str, Any]:
    """Continue an interrupted run: same files, same code snapshot, the runs and once-variants it
    finished kept, the rest measured now."""
    results = json.loads(Path(args.results).read_text())
    if results["config"]["meters"] != args.meters or not (data / "raw.parquet").exists():
        raise SystemExit("--resume needs the interrupted run's results file and generated files")
    if results["code"].get("snapshot"):
        CODE_PATH[:] = [results["code"]["snapshot"]]
        now = code_fingerprint(Path(CODE_PATH[0]) / "greenstream_assets")
        if now["sha256"] != results["code"]["sha256"]:
            raise SystemExit("the code snapshot changed since the run started")
    BASELINE_PATH[:] = [str(baseline_site(workdir))]
    results.setdefault("resumed", []).append(datetime.now(UTC).isoformat(timespec="seconds"))
    results["config"].update(runs=args.runs, slow_runs=args.slow_runs)
    return measure(args, results, workdir, data)


def measure(args: argparse.Namespace, results: dict[str, Any], workdir: Path, data: Path) -> dict[str, Any]:
    """Every variant in a fresh process, run after run, then the once-only variants."""
    day = args.day.isoformat()
    landing = {"batch": str(data / "batch"), "per-meter": str(data / "per-meter"), "week": str(data / "week")}
    skip = set(filter(None, args.skip.split(",")))

    def params(label: str, run: int) -> dict[str, Any]:
        _, _, shape = VARIANTS[label]
        scratch = workdir / "scratch" / f"run{run}-{label}"
        common = {"day": day, "raw": str(data / "raw.parquet"), "scratch": str(scratch)}
        if shape in landing:
            common["landing"] = landing[shape]
        if label == "d_dagster_pg_s3":
            common["backend"] = "pg_s3"
        return common

    order = [label for label in VARIANTS if label not in skip]
    for run in range(len(results["runs"]) + 1, args.runs + 1):
        measured: dict[str, Any] = {}
        for label in order:
            if label in SLOW and run > args.slow_runs:
                continue
            variant = VARIANTS[label][0]
            p = params(label, run)
            measured[label] = launch(f"run{run}-{label}", variant, p, workdir)
            shutil.rmtree(p["scratch"], ignore_errors=True)
        results["runs"].append(measured)
        save(results, args)

    if "profile" not in skip and "profile" not in results["once"]:
        p = {**params("c_dagster_batch", 0), "scratch": str(workdir / "scratch" / "profile"), "profile": True}
        results["once"]["profile"] = launch("profile", "dagster_day", p, workdir)
        shutil.rmtree(p["scratch"], ignore_errors=True)
        save(results, args)
    if "breakdown" not in skip and "breakdown" not in results["once"]:
        p = {"raw": str(data / "raw.parquet"), "landing": landing["batch"], "day": day}
        results["once"]["breakdown"] = launch("breakdown", "breakdown", p, workdir)
        save(results, args)
    if "fixed_cost" not in skip and "fixed_cost" not in results["once"]:
        results["once"]["fixed_cost"] = fixed_cost(data, workdir, day)
        save(results, args)
    if "s3_scale" not in skip and "s3_scale" not in results["once"]:
        argv = ["--from-dir", landing["per-meter"], "--day", day, "--scratch", str(workdir)]
        results["once"]["s3_scale"] = launch("s3_scale", "", {"argv": argv}, workdir, script="s3_scale.py")
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["code"]["live_at_end"] = code_fingerprint(REPO / "greenstream_assets")
    save(results, args)
    return results


# The fixed cost of a Dagster day: the same runs over this many of the day's rows.
FIXED_COST_ROWS = 20_000


def fixed_cost(data: Path, workdir: Path, day: str, runs: int = 3) -> dict[str, Any]:
    """(c) on a day of FIXED_COST_ROWS rows (the first lines of the day's first batch file), in
    fresh processes: what a Dagster day costs whatever its size (runs, steps, events, checks)."""
    landing = workdir / "tiny"
    shutil.rmtree(landing, ignore_errors=True)
    source = sorted((data / "batch" / day).glob("batch-*.csv"))[0]
    with source.open() as lines:
        head = "".join(line for _, line in zip(range(FIXED_COST_ROWS + 1), lines, strict=False))
    (landing / day).mkdir(parents=True)
    (landing / day / source.name).write_text(head)
    measured = []
    for n in range(1, runs + 1):
        scratch = workdir / "scratch" / f"fixed{n}"
        params = {
            "day": day,
            "raw": str(data / "raw.parquet"),
            "scratch": str(scratch),
            "landing": str(landing),
        }
        measured.append(launch(f"fixed{n}-c_dagster_tiny", "dagster_day", params, workdir))
        shutil.rmtree(scratch, ignore_errors=True)
    return {"ok": all(m.get("ok") for m in measured), "rows": FIXED_COST_ROWS, "runs": measured}


def save(results: dict[str, Any], args: argparse.Namespace) -> None:
    Path(args.results).write_text(json.dumps(results, indent=1, default=str))


# ------------------------------------------------------------------------------------- the report


def med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ok_results(results: dict[str, Any], label: str) -> list[dict[str, Any]]:
    return [run[label] for run in results["runs"] if label in run and run[label].get("ok")]


def ratio_per_run(results: dict[str, Any], num: str, den: str, key: str = "wall_s") -> list[float]:
    ratios = []
    for run in results["runs"]:
        a, b = run.get(num), run.get(den)
        if a and b and a.get("ok") and b.get("ok") and b.get(key):
            ratios.append(a[key] / b[key])
    return ratios


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def day_run_walls(result: dict[str, Any]) -> dict[str, Any]:
    """From a Dagster variant: the ingestion run's wall, each day run's wall, and the rest."""
    runs = result.get("runs", [])
    ingest = [r["wall_s"] for r in runs if r["job"] == "ingest_landing_job" and r["wall_s"]]
    days = {r["partition"]: r["wall_s"] for r in runs if r["job"] == "daily_readings_job" and r["wall_s"]}
    in_runs = sum(ingest) + sum(days.values())
    return {
        "ingest_s": sum(ingest) if ingest else None,
        "days": dict(sorted(days.items())),
        "day_s": sum(days.values()) if days else None,
        "between_runs_s": result["wall_s"] - in_runs if runs else None,
    }


def summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label, (_, what, shape) in VARIANTS.items():
        measured = ok_results(results, label)
        failed = [
            run[label].get("error") for run in results["runs"] if label in run and not run[label].get("ok")
        ]
        if not measured and not failed:
            continue
        wall = med([m["wall_s"] for m in measured])
        rows_n = measured[0]["rows"] if measured else None
        rows.append(
            {
                "label": label,
                "what": what,
                "shape": shape,
                "n": len(measured),
                "failed": failed,
                "wall_s": wall,
                "walls": [m["wall_s"] for m in measured],
                "rows": rows_n,
                "rows_per_s": rows_n / wall if wall and rows_n else None,
                "rss_mb": med([m["peak_rss_mb"] for m in measured]),
                "rss_max_mb": max((m["peak_rss_mb"] for m in measured), default=None),
                "process_wall_s": med([m["process_wall_s"] for m in measured]),
                "load": [m.get("load_1min", [None, None]) for m in measured],
            }
        )
    return rows


def verdict(value: float | None, limit: float, higher_is_better: bool = False, unit: str = "x") -> str:
    if value is None:
        return "not measured"
    if higher_is_better:
        return "PASS" if value >= limit else f"MISS (needs {limit / value:.1f}x more)"
    return (
        "PASS"
        if value <= limit
        else f"MISS by {value / limit:.2f}x ({value - limit:+.2f}{unit} over the limit)"
    )


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(
        name: str, ratios: list[float], limit: float, unit: str = "x", higher: bool = False, note: str = ""
    ) -> None:
        value = med(ratios)
        out.append(
            {
                "target": name,
                "value": value,
                "per_run": ratios,
                "limit": limit,
                "unit": unit,
                "verdict": verdict(value, limit, higher, unit),
                "note": note,
            }
        )

    add(
        "rules (parse, 6 rules, enrichment) faster than pandas",
        ratio_per_run(results, "rules_pandas", "rules_polars"),
        5,
        higher=True,
    )
    day_s = med([m["wall_s"] for m in ok_results(results, "c_dagster_batch")])
    floor_s = med([m["wall_s"] for m in ok_results(results, "a_floor_batch")])
    add(
        "(c) Dagster day within 4x of the I/O floor (a)",
        ratio_per_run(results, "c_dagster_batch", "a_floor_batch"),
        4,
        note=(
            f"in seconds: the day {day_s:.2f} s against 4x the floor, {4 * floor_s:.2f} s "
            f"({day_s - 4 * floor_s:+.2f} s)"
            if day_s is not None and floor_s is not None
            else ""
        ),
    )
    add(
        "(c) per-meter files within 2x of batch files, end to end",
        ratio_per_run(results, "c_dagster_per_meter", "c_dagster_batch"),
        2,
    )
    add(
        "(e) 7-day backfill at most 7.5x one day (c)",
        ratio_per_run(results, "e_backfill", "c_dagster_batch"),
        7.5,
    )
    add(
        "(e) memory flat: backfill peak RSS / one-day peak RSS",
        ratio_per_run(results, "e_backfill", "c_dagster_batch", key="peak_rss_mb"),
        1.25,
        note="flat taken as at most 1.25x the one-day peak",
    )
    for label in ("c_dagster_batch", "c_dagster_per_meter", "d_dagster_pg_s3", "e_backfill"):
        measured = ok_results(results, label)
        if measured:
            add(
                f"peak memory of a day at most 2 GB: {label}",
                [m["peak_rss_mb"] / 1024 for m in measured],
                2.0,
                unit=" GB",
            )
    pg = ok_results(results, "pg_copy")
    add(
        "PostgreSQL: day load (replace_day) at most 2x a bare COPY",
        [m["replace_day_first_s"] / m["bare_copy_s"] for m in pg],
        2,
    )
    s3 = results["once"].get("s3_scale", {})
    if s3.get("ok"):
        add("S3: sensor tick over the day's new objects well inside 60 s", [s3["tick_s"]], 60, unit=" s")
    return out


WHOLE_RUN = "(whole run: RUN_START -> RUN_SUCCESS)"


def step_table(
    results: dict[str, Any], label: str
) -> list[tuple[str, str, float | None, float | None, float | None]]:
    """Per step of the ingestion and day runs of ``label``: median wall, share of its run, and
    median peak RSS of the process while the step ran."""
    per_step: dict[tuple[str, str], list[float]] = {}
    per_rss: dict[tuple[str, str], list[float]] = {}
    order: dict[tuple[str, str], int] = {}
    for measured in ok_results(results, label):
        for run in measured.get("runs", []):
            job = "ingest" if run["job"] == "ingest_landing_job" else "day"
            for n, (step, _) in enumerate(
                sorted(run["steps"].items(), key=lambda kv: kv[1]["start"]), start=1
            ):
                order.setdefault((job, step), n)
            for step, timing in run["steps"].items():
                per_step.setdefault((job, step), []).append(timing["wall_s"])
                per_rss.setdefault((job, step), []).append(timing.get("peak_rss_mb"))
            if run["wall_s"]:
                per_step.setdefault((job, WHOLE_RUN), []).append(run["wall_s"])
                per_rss.setdefault((job, WHOLE_RUN), []).append(run.get("peak_rss_mb"))
                outside = run["wall_s"] - sum(t["wall_s"] for t in run["steps"].values())
                per_step.setdefault((job, "(in the run, outside every step)"), []).append(outside)
    rows = []
    for job in ("ingest", "day"):
        whole = med(per_step.get((job, WHOLE_RUN), []))
        items = [(k[1], med(v), med(per_rss.get(k, []))) for k, v in per_step.items() if k[0] == job]
        items.sort(key=lambda kv: (kv[0].startswith("("), -(kv[1] or 0)))
        for step, wall, rss in items:
            shown = f"{step} (#{order[(job, step)]})" if (job, step) in order else step
            rows.append((job, shown, wall, (wall / whole * 100) if whole and wall is not None else None, rss))
    return rows


def probe_tables(profile: dict[str, Any]) -> tuple[list, list, list]:
    """From the profiling run: time per step and category, and objects read more than once."""
    steps: list[tuple[str, float, float]] = []
    for run in profile.get("runs", []):
        for step, timing in run["steps"].items():
            steps.append((step, timing["start"], timing["start"] + timing["wall_s"]))
    by_step: dict[tuple[str, str], list[float]] = {}
    reads: dict[str, int] = {}
    for call in profile.get("probe", []):
        owner = next((s for s, a, b in steps if a <= call["start"] <= b), "(outside steps)")
        by_step.setdefault((owner, call["category"]), []).append(call["wall_s"])
        if call["category"] == "lake.read_parquet":
            key = call["key"]
            key = re.sub(
                r"date=(\d{4}-\d{2}-\d{2})",
                lambda found: "date=DAY" if found.group(1) == profile.get("_day") else "date=OTHER",
                key,
            )
            reads[key] = reads.get(key, 0) + 1
    per_step = sorted(
        ((step, cat, len(v), sum(v)) for (step, cat), v in by_step.items()), key=lambda r: -r[3]
    )
    repeated = sorted(((k, n) for k, n in reads.items() if n > 1), key=lambda kv: -kv[1])
    cprof = profile.get("cprofile", {}).get("project_by_cumtime", [])[:25]
    return per_step, repeated, cprof


def render_report(results: dict[str, Any]) -> tuple[str, str]:
    """(the console table, BENCHMARKS.md)."""
    m = results["machine"]
    gen = results["data"]
    shapes = gen["shapes"]
    rows = summary_rows(results)
    goals = targets(results)
    cfg = results["config"]

    console = [f"{'variant':<24}{'n':>3}{'median s':>10}{'rows/s':>14}{'peak RSS MB':>13}  what"]
    for r in rows:
        console.append(
            f"{r['label']:<24}{r['n']:>3}{fmt(r['wall_s'], 2):>10}{fmt(r['rows_per_s'], 0):>14}{fmt(r['rss_mb'], 0):>13}  {r['what']}"
            + (f"  FAILED x{len(r['failed'])}" if r["failed"] else "")
        )
    console.append("")
    for g in goals:
        console.append(f"{g['target']:<66} {fmt(g['value'], 2):>8}{g['unit']}  {g['verdict']}")

    md: list[str] = []
    md.append("# GreenStream benchmarks\n\n")
    md.append(
        "Generated by `benchmarks/run.py` (issue 7, with the PostgreSQL figure of issue 4 and the S3 figures of "
        "issue 3). Every number below comes from the run recorded in `benchmarks/results.json`; re-run the "
        "command to refresh this file.\n"
    )
    md.append("\n## The command\n\n")
    md.append("```bash\n. .venv/bin/activate\n")
    md.append(f"{results['command']}\n```\n")
    in_env = results["machine"].get("pandas_in_product_env")
    if in_env is not None:
        md.append(
            f"\nThe pandas baseline's pandas {BASELINE_PACKAGES[0].split('==')[1]} is installed by `run.py` into "
            "`<workdir>/baseline-site` (`pip install --target`) and is on the baseline variants' `PYTHONPATH` only. "
            "The product does not depend on pandas, but pandera imports it at every code-location load whenever "
            "it can, ~0.2-0.4 s."
            + (
                " **This run's venv had pandas installed itself, so every Dagster variant paid that import** "
                "(a venv made before pandas left the dev extras: `pip uninstall pandas` measures the product as "
                "installed)."
                if in_env
                else " The venv the product variants ran in has no pandas, as an installation of the product has none."
            )
            + "\n"
        )
    md.append(
        f"\nRun started {results['started']}, finished {results.get('finished', '(unfinished)')}. Options: "
        f"{cfg['meters']:,} meters at 15-minute readings, day {cfg['day']}, {cfg['runs']} runs "
        f"(the slow variants (d) and (e) in the first {cfg['slow_runs']} of them), a {cfg['days']}-day backfill."
        + (
            f" Interrupted and resumed ({', '.join(results['resumed'])}): see the notes under the machine; the "
            "`runs` column of the results says how many runs each variant has."
            if results.get("resumed")
            else ""
        )
        + "\n"
    )
    md.append("\n## The machine\n\n")
    v = m["versions"]
    md.append(
        f"- CPU: {m['cpu']} ({m['cpu_mhz']} MHz), **{m['nproc']} cores**; memory {m['memory_gb']} GB; Linux {m['kernel']}\n"
        f"- Python {m['python']}; polars {v['polars']}, DuckDB {v['duckdb']}, Dagster {v['dagster']}, pandas {v['pandas']}, "
        f"pyarrow {v['pyarrow']}, numpy {v['numpy']}, pandera {v['pandera']}, psycopg {v['psycopg']}, moto {v['moto']}; "
        f"PostgreSQL server {v['postgresql_server']} on 127.0.0.1 (same machine)\n"
        f"- Polars' allocator, in every variant: `_RJEM_MALLOC_CONF={m.get('allocator_conf', 'default')}` (the "
        'product\'s own setting, see README, "Benchmarks")\n'
        f"- Load average when the run started: {', '.join(f'{x:.2f}' for x in m['load_avg_at_start'])}. The machine is "
        "shared: other work ran during the benchmark, which is why every ratio is taken within one run.\n"
    )
    for note in results.get("notes", []):
        md.append(f"- {note}\n")
    code = results.get("code", {})
    if code:
        changed = code.get("live_at_end") and code["live_at_end"]["sha256"] != code["sha256"]
        md.append(
            f"- Product code measured: `greenstream_assets` sources digest `{code['sha256']}` (newest file "
            f"{code['newest_file']}), "
            + (
                f"a copy taken when the run started ({code['taken']}) that every variant imported"
                if code.get("snapshot")
                else "imported live from the repository"
            )
            + (
                f". The repository's code changed during the run (now `{code['live_at_end']['sha256']}`, newest "
                f"file {code['live_at_end']['newest_file']}): the figures are for the copy, not for the later code."
                if changed
                else "."
            )
            + "\n"
        )
    md.append("\n## The data\n\n")
    md.append("| shape | files | MB of CSV | rows |\n|---|---:|---:|---:|\n")
    for name, label in (
        ("batch", "one day, 24 hourly batch files"),
        ("per-meter", "one day, one file per meter"),
        ("week", f"{cfg['days']} days, batch files"),
    ):
        s = shapes[name]
        md.append(f"| {label} | {s['files']:,} | {s['bytes'] / 1e6:,.0f} | {s['rows']:,} |\n")
    md.append(
        f"\nGenerated by `greenstream_assets.generate.write_day` with the default defects (5 % W units, 1 % empty values, "
        f"0.5 % rows sent twice, negatives, spikes, unknown units, 1 % stuck meters, one unreadable file a day). "
        f"The day's raw rows as staged: {gen['raw_rows']:,}. Rows/s below divides these rows by the wall time.\n"
    )

    md.append("\n## Results (medians)\n\n")
    md.append(
        "Each variant runs in its own fresh process; peak RSS is that process's (and its children's) high-water "
        "mark from `os.wait4`. Wall time is measured inside the process around the work (for the Dagster "
        "variants: `run_landing_zone`, from launching the ingestion run to the last day run's success); the "
        "`process s` column adds interpreter start-up and imports.\n\n"
    )
    md.append(
        "| variant | what | shape | runs | median wall s | each run s | rows/s | peak RSS MB (max) | process s "
        "| load before -> after, each run |\n"
    )
    md.append("|---|---|---|---:|---:|---|---:|---:|---:|---|\n")
    for r in rows:
        each = ", ".join(f"{w:.1f}" for w in r["walls"]) + (
            f"; {len(r['failed'])} failed" if r["failed"] else ""
        )
        md.append(
            f"| `{r['label']}` | {r['what']} | {r['shape']} | {r['n']} | **{fmt(r['wall_s'], 2)}** | {each} | "
            f"{fmt(r['rows_per_s'], 0)} | {fmt(r['rss_mb'], 0)} ({fmt(r['rss_max_mb'], 0)}) | {fmt(r['process_wall_s'], 1)} | "
            + ", ".join(f"{a:.1f} -> {b:.1f}" for a, b in r["load"] if a is not None)
            + " |\n"
        )
    failures = [(r["label"], e) for r in rows for e in r["failed"]]
    if failures:
        md.append("\nFailed runs: " + "; ".join(f"`{label}`: {e}" for label, e in failures) + "\n")

    md.append("\n### Parts of each variant (medians, seconds)\n\n")
    for label in (
        "a_floor_batch",
        "a_floor_per_meter",
        "rules_polars",
        "rules_pandas",
        "b_pandas_pipeline",
        "product_no_dagster",
    ):
        measured = ok_results(results, label)
        if measured and "parts" in measured[0]:
            parts = {k: med([x["parts"][k] for x in measured]) for k in measured[0]["parts"]}
            md.append(f"- `{label}`: " + ", ".join(f"{k} {fmt(val, 2)}" for k, val in parts.items()) + "\n")
    for label in ("c_dagster_batch", "c_dagster_per_meter", "d_dagster_pg_s3", "e_backfill"):
        measured = ok_results(results, label)
        if not measured:
            continue
        walls = [day_run_walls(x) for x in measured]
        md.append(
            f"- `{label}`: ingestion run {fmt(med([w['ingest_s'] for w in walls]), 2)}, day run(s) "
            f"{fmt(med([w['day_s'] for w in walls]), 2)}, between runs (definitions, ledger, launching) "
            f"{fmt(med([w['between_runs_s'] for w in walls]), 2)}; imports {fmt(med([x['import_s'] for x in measured]), 2)}"
            + (
                f"; moto server peak RSS {fmt(med([x['moto'].get('peak_rss_mb') for x in measured]), 0)} MB, S3 upload (set-up, not timed) {fmt(med([x.get('upload_setup_s') for x in measured]), 1)} s"
                if label.startswith("d_")
                else ""
            )
            + "\n"
        )

    rp, rd = ok_results(results, "rules_polars"), ok_results(results, "rules_pandas")
    if rp and rd:
        same = rp[0]["counts"] == rd[0]["counts"]
        md.append(
            f"\nThe pandas baseline and the product's rules agree on the day: {'yes, every count' if same else 'NO'} "
            f"(kept {rp[0]['counts']['kept']:,}, quarantined {rp[0]['counts']['quarantined']:,}, collapsed "
            f"{rp[0]['counts']['collapsed']:,}, anomalies {rp[0]['counts']['anomalies']:,}, faulty readings "
            f"{rp[0]['counts']['faulty_readings']:,}, peak-period rows {rp[0]['counts']['peak_period_rows']:,}).\n"
        )
        if not same:
            md.append(
                f"\n- polars: `{json.dumps(rp[0]['counts'])}`\n- pandas: `{json.dumps(rd[0]['counts'])}`\n"
            )

    md.append("\n## Targets\n\n")
    md.append(
        "Each ratio is computed within one run (same files, same machine state), then the median over runs.\n\n"
    )
    md.append("| target | median | each run | limit | verdict |\n|---|---:|---|---:|---|\n")
    for g in goals:
        each = ", ".join(f"{x:.2f}" for x in g["per_run"])
        limit = (">= " if "faster" in g["target"] else "<= ") + f"{g['limit']}{g['unit']}"
        note = f" ({g['note']})" if g["note"] else ""
        md.append(
            f"| {g['target']}{note} | {fmt(g['value'], 2)}{g['unit']} | {each} | {limit} | **{g['verdict']}** |\n"
        )

    pg = ok_results(results, "pg_copy")
    if pg:
        md.append("\n### PostgreSQL load (issue 4)\n\n")
        md.append("| figure | median s | each run |\n|---|---:|---|\n")
        for key, label in (
            ("bare_copy_s", "bare COPY of the CSV bytes into an empty table, no index, no key"),
            ("replace_day_first_s", "`PostgresWarehouse.replace_day` of the day (first load)"),
            ("replace_day_again_s", "`replace_day` again (the day replaced by a rerun)"),
            ("serialize_csv_s", "polars write_csv of the rows (inside replace_day, outside the bare COPY)"),
        ):
            md.append(
                f"| {label} | {fmt(med([x[key] for x in pg]), 2)} | {', '.join(f'{x[key]:.1f}' for x in pg)} |\n"
            )
        md.append(
            f"\n{pg[0]['rows']:,} rows, {pg[0]['csv_mb']:.0f} MB of CSV; both schemas dropped afterwards.\n"
        )

    s3 = results["once"].get("s3_scale", {})
    if s3.get("ok"):
        md.append("\n### S3: a day of per-meter files (issue 3)\n\n")
        md.append(
            f"{s3['objects']:,} objects ({s3['csv_mb']:.0f} MB, {s3['rows']:,} rows) on {s3['endpoint']}, measured once. "
            f"The reference, moto alone: **{s3['raw_get_rate_concurrent']:,.0f} GETs/s** with 16 concurrent requests "
            f"({s3['raw_get_sample']:,} objects), {s3['raw_get_rate_sequential']:,.0f} GETs/s one after another, "
            f"{s3['put_rate']:,.0f} PUTs/s with 32 threads"
            + (
                f"; listing all {s3['objects']:,} keys alone (no pipeline): **{s3['raw_list_s']:.1f} s**.\n\n"
                if "raw_list_s" in s3
                else ".\n\n"
            )
        )
        md.append("| step | s | objects/s | S3 calls |\n|---|---:|---:|---|\n")
        for key, calls, label in (
            ("upload_s", None, "upload (set-up, 32 concurrent PUTs)"),
            ("tick_s", "tick_requests", "sensor tick: list + compare with the ledger"),
            (
                "ingest_s",
                "ingest_requests",
                "ingestion run: concurrent GETs, raw backups (packed), parse, stage",
            ),
            ("tick2_s", "tick2_requests", "sensor tick after ingestion: request the day"),
            ("day_s", "day_requests", "day run, lake on S3 (DuckDB warehouse)"),
        ):
            c = (
                ", ".join(f"{k} {n:,}" for k, n in sorted(s3.get(calls, {}).items()))
                if calls
                else "PUT " + f"{s3['objects']:,}"
            )
            md.append(f"| {label} | {s3[key]:.1f} | {s3['objects'] / s3[key]:,.0f} | {c} |\n")
        reads = s3.get("ingest_requests", {}).get("read", s3["objects"])
        writes = s3.get("ingest_requests", {}).get("write", s3["objects"])
        gets = reads / s3["raw_get_rate_concurrent"]
        puts = writes / s3["put_rate"]
        md.append(
            f"\nmoto bounds the ingestion: at its own rates, its {reads:,} GETs take {gets:.0f} s and its {writes:,} "
            f"PUTs (raw backups, small files packed one object per chunk; staging; ledger) {puts:.0f} s, "
            f"{gets + puts:.0f} s together, against {s3['ingest_s']:.0f} s measured. Peak RSS: benchmark process "
            f"{s3['peak_rss_mb']:,.0f} MB, moto server {s3.get('moto_peak_rss_mb', 0):,.0f} MB.\n"
        )

    pairs = [
        (i + 1, run["e_backfill"], run["c_dagster_batch"])
        for i, run in enumerate(results["runs"])
        if run.get("e_backfill", {}).get("ok") and run.get("c_dagster_batch", {}).get("ok")
    ]
    if pairs:
        md.append("\n### Backfill (e): cost per day, in each run that measured it\n\n")
        md.append(
            "Wall of each Dagster run and the process's peak RSS while it ran; the one-day (c) of the same "
            "run for comparison.\n\n"
        )
        md.append(
            "| Dagster run | "
            + " | ".join(f"run {n}: wall s | run {n}: peak RSS MB" for n, _, _ in pairs)
            + " |\n"
        )
        md.append("|---|" + "---:|---:|" * len(pairs) + "\n")
        per_run = []
        for _, back, one in pairs:
            rows = {"ingestion, all days": (day_run_walls(back)["ingest_s"], None)}
            for r in back["runs"]:
                key = "ingestion, all days" if r["job"] == "ingest_landing_job" else f"day {r['partition']}"
                rows[key] = (r["wall_s"], r.get("peak_rss_mb"))
            rows["whole backfill (e)"] = (back["wall_s"], back["peak_rss_mb"])
            rows["one day alone (c), same run"] = (one["wall_s"], one["peak_rss_mb"])
            per_run.append(rows)
        for key in per_run[0]:
            cells = " | ".join(
                f"{fmt(r.get(key, (None, None))[0], 1)} | {fmt(r.get(key, (None, None))[1], 0)}"
                for r in per_run
            )
            md.append(f"| {key} | {cells} |\n")

    md.append("\n## Where the time goes\n\n")
    md.append(
        "Per step, from the Dagster event log (STEP_START to STEP_SUCCESS), medians over the runs of "
        "`c_dagster_batch` (the day on the embedded default). Steps run in one process (`in_process_executor`): "
        "there is no per-step process start.\n\n"
    )
    md.append(
        "| run | step | median s | share of its run | peak RSS MB during the step |\n|---|---|---:|---:|---:|\n"
    )
    for job, step, wall, share, rss in step_table(results, "c_dagster_batch"):
        md.append(f"| {job} | `{step}` | {fmt(wall, 2)} | {fmt(share, 0)} % | {fmt(rss, 0)} |\n")
    pm_steps = step_table(results, "c_dagster_per_meter")
    if pm_steps:
        md.append(
            "\nThe same for `c_dagster_per_meter` (ingestion only; the day run reads the same staged rows):\n\n"
        )
        md.append("| run | step | median s | peak RSS MB |\n|---|---|---:|---:|\n")
        for job, step, wall, _, rss in pm_steps:
            if job == "ingest":
                md.append(f"| {job} | `{step}` | {fmt(wall, 2)} | {fmt(rss, 0)} |\n")
    fixed = results["once"].get("fixed_cost", {})
    if fixed.get("ok"):
        walls = [day_run_walls(x) for x in fixed["runs"]]
        full = med([m["wall_s"] for m in ok_results(results, "c_dagster_batch")])
        whole = med([x["wall_s"] for x in fixed["runs"]])
        md.append(
            f"\n**What a Dagster day costs whatever its size**: the same ingestion and day run over "
            f"{fixed['rows']:,} rows (the first lines of the day's first batch file, 0.4 % of the day), "
            f"medians of {len(fixed['runs'])} fresh processes: **{fmt(whole, 2)} s** (ingestion run "
            f"{fmt(med([w['ingest_s'] for w in walls]), 2)}, day run {fmt(med([w['day_s'] for w in walls]), 2)}, "
            f"between runs {fmt(med([w['between_runs_s'] for w in walls]), 2)})"
            + (f", {100 * whole / full:.0f} % of the full day's {fmt(full, 2)} s" if whole and full else "")
            + f". It is the runs, their {sum(len(r['steps']) for r in fixed['runs'][0]['runs'])} steps and "
            "their events (each stored in Dagster's SQLite "
            "event log, which the local instance keeps one connection per database for: "
            "greenstream_assets/defs/instance.py), the checks and the warehouse opens, not the rows.\n"
        )
    profile = results["once"].get("profile", {})
    if profile.get("ok"):
        profile["_day"] = cfg["day"]
        per_step, repeated, cprof = probe_tables(profile)
        md.append(
            f"\n### One profiled day (instrumented, cProfile on; wall {profile['wall_s']:.1f} s, so slower than the timed runs)\n\n"
            "Time inside the lake's readers and writers, the pandera checks and the warehouse, attributed to "
            "the step whose window holds the call (thread-seconds for the ingestion's worker threads):\n\n"
        )
        md.append("| step | what | calls | s |\n|---|---|---:|---:|\n")
        for step, cat, n, s in per_step:
            if s >= 0.05:
                md.append(f"| `{step}` | {cat} | {n} | {s:.2f} |\n")
        if repeated:
            md.append(
                "\nThe same Parquet object read more than once in one day's runs:\n\n| object | reads |\n|---|---:|\n"
            )
            for key, n in repeated:
                md.append(f"| `{key}` | {n} |\n")
        if cprof:
            md.append("\nProject and pandera functions by cumulative time (cProfile, main thread):\n\n")
            md.append("| function | calls | cumulative s | own s |\n|---|---:|---:|---:|\n")
            for r in cprof:
                md.append(f"| `{r['where']}` | {r['calls']:,} | {r['cumtime']:.2f} | {r['tottime']:.2f} |\n")
    brk = results["once"].get("breakdown", {})
    if brk.get("ok"):
        md.append(
            "\n### The rules and the ingestion, piece by piece (`breakdown`, once, same rows)\n\n"
            "Each piece as the product evaluates it, beside a prototype of a cheaper way to the same "
            "result (the prototypes live in `benchmarks/worker.py`, not in the product):\n\n"
            "| area | piece | s | note |\n|---|---|---:|---|\n"
        )
        for t in brk["timings"]:
            md.append(f"| {t['area']} | {t['piece']} | {fmt(t['s'], 2)} | {t['note']} |\n")
    notes = HERE / "analysis.md"
    if notes.exists():
        md.append("\n" + notes.read_text())
    return "\n".join(console), "".join(md)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meters", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=7, help="days in the backfill (e)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--slow-runs", type=int, default=None, help="runs that include (d) and (e) (default: all)"
    )
    parser.add_argument("--day", type=date.fromisoformat, default=date(2024, 3, 4))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--skip", default="", help="comma-separated variant labels (or profile, s3_scale) to leave out"
    )
    parser.add_argument("--workdir", default="/tmp/greenstream-bench")
    parser.add_argument(
        "--reuse-data", action="store_true", help="keep the generated files of a previous run"
    )
    parser.add_argument("--results", default=str(HERE / "results.json"))
    parser.add_argument("--output", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run recorded in --results (same files, same code snapshot)",
    )
    parser.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="import the live greenstream_assets instead of a copy taken when the run starts",
    )
    args = parser.parse_args()
    args.slow_runs = args.runs if args.slow_runs is None else args.slow_runs
    if args.report_only:
        results = json.loads(Path(args.results).read_text())
    else:
        if args.days < 1 or args.day + timedelta(days=args.days) > date.today():
            raise SystemExit("the backfill's days must be in the past")
        results = run_all(args)
    console, markdown = render_report(results)
    print(console)
    Path(args.output).write_text(markdown)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
