"""The landing-zone sensor, evaluated tick by tick as the daemon would."""

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from greenstream_assets import ingestion
from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.sensors import landing_zone_sensor
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
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

    def launch(self, requests: list[dg.RunRequest]) -> list[dg.RunRequest]:
        """Runs the requests, skipping any whose run key a run already has (as the daemon does);
        returns those it ran."""
        launched = []
        for request in requests:
            used = self.platform.instance.get_runs(dg.RunsFilter(tags={"dagster/run_key": request.run_key}))
            if used:
                continue
            launched.append(request)
            job = self.defs.resolve_job_def(request.job_name)
            result = job.execute_in_process(
                instance=self.platform.instance,
                partition_key=request.partition_key,
                tags={"dagster/run_key": request.run_key},
            )
            assert result.success
        return launched


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


def test_a_key_put_back_as_it_was_is_staged_and_its_day_run_again(platform):
    """c1 -> c2 -> c1 under one key: the third is new content again (on S3 its ETag, the MD5 of
    the bytes, is c1's), and the day's run is not swallowed by an earlier run's key."""
    daemon = Daemon(platform)
    c1, c2 = csv("M1,2024-03-04T10:00:00Z,1,kW"), csv("M1,2024-03-04T10:00:00Z,9,kW")
    for content, kw in [(c1, 1.0), (c2, 9.0), (c1, 1.0)]:
        platform.drop("in/a.csv", content)
        assert kinds(daemon.launch(daemon.tick())) == [INGEST]
        assert kinds(daemon.launch(daemon.tick())) == [day("2024-03-04")]
        assert platform.query("SELECT energy_kw FROM meter_readings").rows() == [(kw,)]
    assert daemon.tick() == []


def test_an_ingestion_that_failed_before_its_batch_note_still_runs_its_day(platform, monkeypatch):
    """The ledger rows are written, then the write of the batch note fails: the step's retry finds
    the files seen and writes the note it lacks, so the sensor still runs the day."""
    daemon = Daemon(platform)
    platform.drop("in/a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW"))
    real_write_json, failed = lake.write_json, []

    def write_json(store, key, payload):
        if key.startswith(lake.LEDGER_BATCHES) and not failed:
            failed.append(key)
            raise OSError("disk full")
        real_write_json(store, key, payload)

    monkeypatch.setattr(lake, "write_json", write_json)
    assert kinds(daemon.launch(daemon.tick())) == [INGEST]
    assert len(failed) == 1
    assert kinds(daemon.launch(daemon.tick())) == [day("2024-03-04")]
    assert platform.query("SELECT energy_kw FROM meter_readings").rows() == [(1.0,)]
    assert daemon.tick() == []


def test_an_ingestion_finishing_while_the_sensor_ticks_is_not_lost(platform, monkeypatch):
    """A late file's ingestion finishes just as a tick lists the batch notes: its day still runs."""
    daemon = Daemon(platform)
    platform.drop("in/a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW"))
    daemon.launch(daemon.tick())
    daemon.launch(daemon.tick())
    platform.drop("late/b.csv", csv("M2,2024-03-04T11:00:00Z,2,kW"))
    real_batches_after = ingestion.batches_after

    def batches_after_an_ingestion(lake_store, cursor, *args):
        # The ingestion run ends right now, between the tick's reads.
        ingestion.ingest_new_files(platform.landing, platform.lake, RulesConfig())
        monkeypatch.setattr(ingestion, "batches_after", real_batches_after)
        return real_batches_after(lake_store, cursor, *args)

    monkeypatch.setattr(ingestion, "batches_after", batches_after_an_ingestion)
    requested = daemon.tick() + daemon.tick()
    assert kinds(requested) == [day("2024-03-04")]
    daemon.launch(requested)
    rows = platform.query("SELECT meter_id, energy_kw FROM meter_readings ORDER BY meter_id").rows()
    assert rows == [("M1", 1.0), ("M2", 2.0)]


def test_a_reading_dated_tomorrow_gets_its_days_run(platform):
    """Ingestion stages readings dated up to the day after they arrive: that day's partition exists,
    so the tick's requests (tomorrow's and another day's) all run."""
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    daemon = Daemon(platform)
    platform.drop("in/a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW"))
    platform.drop("in/b.csv", csv(f"M2,{tomorrow.isoformat()}T00:15:00Z,2,kW"))
    daemon.launch(daemon.tick())
    assert kinds(daemon.launch(daemon.tick())) == [day("2024-03-04"), day(tomorrow.isoformat())]
    rows = platform.query("SELECT meter_id, energy_kw FROM meter_readings ORDER BY meter_id").rows()
    assert rows == [("M1", 1.0), ("M2", 2.0)]
    assert daemon.tick() == []
