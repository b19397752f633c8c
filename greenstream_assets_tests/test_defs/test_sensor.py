"""The landing-zone sensor, evaluated tick by tick as the daemon would."""

import json
from datetime import date

import dagster as dg

from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.sensors import landing_zone_sensor
from greenstream_assets.runner import run_landing_zone
from greenstream_assets_tests.conftest import csv


class Daemon:
    """Ticks the sensor with the cursor carried over, and runs what it asks for."""

    def __init__(self, platform):
        self.platform = platform
        self.defs = build_definitions({"storage": platform.storage})
        self.cursor = None

    def tick(self) -> list[dg.RunRequest]:
        context = dg.build_sensor_context(
            instance=self.platform.instance,
            cursor=self.cursor,
            resources={"storage": self.platform.storage},
            definitions=self.defs,
        )
        result = landing_zone_sensor(context)
        self.cursor = result.cursor
        return list(result.run_requests or [])

    def launch(self, requests: list[dg.RunRequest]) -> None:
        for request in requests:
            job = self.defs.resolve_job_def(request.job_name)
            result = job.execute_in_process(
                instance=self.platform.instance,
                partition_key=request.partition_key,
                tags={"dagster/run_key": request.run_key},
            )
            assert result.success


def kinds(requests):
    return sorted((r.job_name, r.partition_key) for r in requests)


INGEST = ("ingest_landing_job", None)


def day(d: str):
    return ("daily_readings_job", d)


def test_new_files_launch_ingestion_then_exactly_their_days(platform):
    daemon = Daemon(platform)
    assert daemon.tick() == []
    platform.drop("in/a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW", "M1,2024-03-06T10:00:00Z,1,kW"))
    platform.drop("in/b.csv", csv("M2,2024-03-04T11:00:00Z,1,kW"))

    first = daemon.tick()
    assert kinds(first) == [INGEST]
    daemon.launch(first)
    second = daemon.tick()
    # A reading belongs to the day of its own timestamp: the file spans two days, not three.
    assert kinds(second) == [day("2024-03-04"), day("2024-03-06")]
    assert all(r.run_key.startswith(r.partition_key + ":") for r in second)
    daemon.launch(second)
    assert daemon.tick() == []


def test_a_late_file_reruns_only_its_day_and_a_resent_file_its_days(platform):
    daemon = Daemon(platform)
    platform.drop("in/a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW", "M1,2024-03-05T10:00:00Z,1,kW"))
    platform.drop("in/b.csv", csv("M1,2024-03-06T10:00:00Z,1,kW"))
    daemon.launch(daemon.tick())
    daemon.launch(daemon.tick())
    assert daemon.tick() == []

    platform.drop("late/c.csv", csv("M9,2024-03-05T23:45:00Z,4,kW"))
    late = daemon.tick()
    assert kinds(late) == [INGEST]
    daemon.launch(late)
    rerun = daemon.tick()
    assert kinds(rerun) == [day("2024-03-05")]
    daemon.launch(rerun)

    # Same bytes again (a touched file): ingested as unchanged, no day reruns.
    platform.drop("in/b.csv", csv("M1,2024-03-06T10:00:00Z,1,kW"))
    daemon.launch(daemon.tick())
    assert daemon.tick() == []

    # New content under the same key: its old and new days both run again.
    platform.drop("in/b.csv", csv("M1,2024-03-07T10:00:00Z,2,kW"))
    daemon.launch(daemon.tick())
    assert kinds(daemon.tick()) == [day("2024-03-06"), day("2024-03-07")]


def test_days_already_run_by_the_cli_are_not_requested_again(platform):
    daemon = Daemon(platform)
    platform.drop("in/a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW"))
    summary = run_landing_zone(instance=platform.instance, resources={"storage": platform.storage})
    assert list(summary.days) == [date(2024, 3, 4)]
    assert daemon.tick() == []


def test_no_second_ingestion_while_one_is_in_flight(platform):
    daemon = Daemon(platform)
    platform.drop("in/a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW"))
    job = daemon.defs.resolve_job_def("ingest_landing_job")
    platform.instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    assert daemon.tick() == []


def test_the_cursor_stays_small(platform):
    daemon = Daemon(platform)
    for i in range(30):
        platform.drop(f"in/{i}.csv", csv(f"M{i},2024-03-04T10:00:00Z,1,kW"))
        daemon.launch([r for r in daemon.tick() if r.job_name == "ingest_landing_job"])
    daemon.tick()
    cursor = json.loads(daemon.cursor)
    assert set(cursor) == {"last", "recent"}
    # Only batches inside the ten-minute window are remembered by name.
    assert len(cursor["recent"]) <= 30
    assert len(daemon.cursor) < 2000
