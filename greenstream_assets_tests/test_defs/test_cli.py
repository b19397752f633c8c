"""The `greenstream` command as a person runs it: generate, run, re-run a day, and a failure."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest


def greenstream(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "GREENSTREAM_LANDING": str(tmp_path / "landing"),
        "GREENSTREAM_LAKE": str(tmp_path / "lake"),
        "GREENSTREAM_WAREHOUSE": str(tmp_path / "warehouse.duckdb"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "greenstream_assets.cli", *args],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generate_then_run_then_rerun_a_day(tmp_path):
    gen = greenstream(
        tmp_path, "generate", "--meters", "30", "--days", "2", "--start", "2024-03-04", "--interval", "60"
    )
    assert gen.returncode == 0, gen.stderr
    # 24 hourly batch files and one broken file per day.
    assert gen.stdout.startswith("wrote 50 files for 2 day(s) of 30 meters")

    run = greenstream(tmp_path, "run")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("ingested: files_staged=48, files_failed=2, rows_staged=")
    assert lines[1].split() == [
        "day",
        "kept",
        "quarantined",
        "collapsed",
        "anomalies",
        "faulty_meters",
        "peak_kw",
        "peak_ts",
        "status",
    ]
    assert [line.split()[0] for line in lines[2:]] == ["2024-03-04", "2024-03-05"]
    assert all(line.split()[8] == "ok" or line.split()[8:10] == ["ok", "(warn:"] for line in lines[2:])

    # The summary's counts are the warehouse's.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        per_day = dict(
            conn.sql("SELECT reading_date::VARCHAR, count(*) FROM meter_readings GROUP BY 1").fetchall()
        )
    assert {line.split()[0]: int(line.split()[1]) for line in lines[2:]} == per_day
    # The runs were recorded on the instance at DAGSTER_HOME (they show in the UI).
    assert (tmp_path / "home" / "dagster.yaml").exists()
    assert any((tmp_path / "home" / "storage").iterdir())

    again = greenstream(tmp_path, "run")
    assert again.returncode == 0 and "no day needed a run" in again.stdout

    day = greenstream(tmp_path, "run", "--day", "2024-03-05")
    assert day.returncode == 0, day.stderr
    assert [line.split()[0] for line in day.stdout.splitlines()[2:]] == ["2024-03-05"]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        assert (
            dict(conn.sql("SELECT reading_date::VARCHAR, count(*) FROM meter_readings GROUP BY 1").fetchall())
            == per_day
        )


def test_a_failed_run_exits_non_zero_with_a_clear_message(tmp_path):
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "a.csv").write_text(
        "meter_id,timestamp,energy_value,energy_unit\nM1,2024-03-04T10:00:00Z,1,kW\n"
    )
    (tmp_path / "not-a-database").mkdir()
    run = greenstream(tmp_path, "run", GREENSTREAM_WAREHOUSE=str(tmp_path / "not-a-database"))
    assert run.returncode == 1
    assert "greenstream run: FAILED: 2024-03-04: FAILED (run " in run.stderr
    assert "2024-03-04" in run.stdout and "FAILED" in run.stdout


def test_run_a_day_outside_the_partitions_says_so(tmp_path):
    run = greenstream(tmp_path, "run", "--day", "2014-12-31")
    assert run.returncode == 2
    assert run.stderr.startswith(
        "greenstream run: 2014-12-31 is no day partition: days run from 2015-01-01 to "
    )
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "0"], "argument --interval: 0 is out of range: from 1 to 1440"),
        (
            ["--interval", "7"],
            "argument --interval: 7 does not divide a day (1440 minutes) into whole intervals",
        ),
        (["--meters", "-1"], "argument --meters: -1 is out of range: at least 1"),
        (["--days", "0"], "argument --days: 0 is out of range: at least 1"),
        (["--w-units", "2"], "argument --w-units: 2 is out of range: from 0.0 to 1.0"),
        (["--nulls", "abc"], "argument --nulls: 'abc' is not a number"),
        (["--broken-files", "-1"], "argument --broken-files: -1 is out of range: at least 0"),
    ],
)
def test_generate_rejects_settings_it_cannot_honour_in_one_line(tmp_path, args, message):
    run = greenstream(tmp_path, "generate", *args)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == f"greenstream generate: error: {message}"
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "landing").exists()


def test_run_with_a_landing_zone_that_is_no_folder_says_so(tmp_path):
    run = greenstream(tmp_path, "run", GREENSTREAM_LANDING=str(tmp_path / "no-such-folder"))
    assert run.returncode == 2
    assert run.stderr == (
        f"greenstream run: the landing zone {tmp_path / 'no-such-folder'} is no folder "
        "(GREENSTREAM_LANDING): nothing to ingest\n"
    )
    assert not (tmp_path / "home").exists()
