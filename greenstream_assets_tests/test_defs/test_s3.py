"""The platform on S3 (moto's server over HTTP): hostile keys, throttling, listings past a page,
uploads racing a tick, and secrets kept out of logs."""

import threading
from datetime import date

import dagster as dg
import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets_tests.conftest import S3_SECRET, csv
from greenstream_assets_tests.faults import FaultyS3Proxy
from greenstream_assets_tests.test_defs.test_sensor import Daemon

GOOD = csv("M1,2024-03-04T10:00:00Z,1,kW")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


def test_hostile_keys_and_non_csv_objects_never_crash_and_never_escape(s3_platform):
    p = s3_platform
    client, bucket = p.s3.client(), p.landing.bucket
    objects = {
        "landing/ok dir/zähler 1.csv": GOOD.encode(),
        "landing/../outside.csv": GOOD.replace("M1", "M2").encode(),
        "landing//leading-slash.csv": GOOD.replace("M1", "M3").encode(),
        "landing/photo.png": PNG,
        "landing/_SUCCESS": b"",
        "landing/folder/": b"",
    }
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)

    summary = run_landing_zone(instance=p.instance, resources={"storage": p.storage})
    assert summary.failed == []
    assert summary.ingest == {"files_staged": 1, "files_failed": 5, "rows_staged": 1}
    assert p.query("SELECT meter_id, source_file FROM meter_readings").rows() == [
        ("M1", "ok dir/zähler 1.csv")
    ]

    notes = {}
    for obj in p.lake.list("failed/"):
        if obj.key.endswith(".reason.json"):
            note = lake.read_json(p.lake, obj.key)
            notes[note["source_key"]] = note["reason"]
    assert notes == {
        "../outside.csv": "unsafe_key",
        "/leading-slash.csv": "unsafe_key",
        "photo.png": "not_text",
        "_SUCCESS": "empty_file",
        "folder/": "folder_placeholder",
    }
    # Nothing was written outside the lake's prefix (the landing zone is read-only to us).
    written = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(k.startswith("lake/") or k in objects for k in written)
    assert sorted(k for k in written if not k.startswith("lake/")) == sorted(objects)


def test_throttled_reads_are_retried_and_the_run_succeeds(s3_platform, monkeypatch):
    p = s3_platform
    p.drop("a.csv", GOOD)
    p.drop("b.csv", csv("M2,2024-03-04T10:00:00Z,2,kW"))
    # botocore retries a.csv's two 503s itself (3 attempts per call); b.csv's five outlast one
    # call's attempts, so the step's RetryPolicy runs it again.
    with FaultyS3Proxy(p.s3.endpoint, {"landing/a.csv": 2, "landing/b.csv": 5}) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        storage = StorageResource(
            landing=p.storage.landing, lake=p.storage.lake, warehouse=p.storage.warehouse, s3_max_attempts=3
        )
        defs = build_definitions({"storage": storage})
        result = defs.resolve_job_def("ingest_landing_job").execute_in_process(instance=p.instance)
        assert result.success
        assert proxy.injected == {"landing/a.csv": 2, "landing/b.csv": 5}
        retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
        assert len(retries) == 1
        ledger = ingestion.load_ledger(storage.lake_store())
    assert sorted(ledger.filter(pl.col("status") == "staged").get_column("key").to_list()) == [
        "a.csv",
        "b.csv",
    ]


def test_2500_objects_over_several_ticks_none_missed_none_repeated(s3_platform):
    p = s3_platform
    daemon = Daemon(p)
    client, bucket = p.s3.client(), p.landing.bucket

    def upload(start: int, stop: int) -> None:
        for i in range(start, stop):
            day = 4 + i % 3
            client.put_object(
                Bucket=bucket,
                Key=f"landing/wave/{i:05d}.csv",
                Body=csv(f"M{i},2024-03-0{day}T10:00:00Z,1,kW").encode(),
            )

    upload(0, 1_200)  # hundreds of objects share each LastModified second
    requests = daemon.tick()
    assert [r.job_name for r in requests] == ["ingest_landing_job"]
    # More objects land while the ingestion run lists and reads.
    racer = threading.Thread(target=upload, args=(1_200, 2_000))
    racer.start()
    daemon.launch(requests)
    racer.join()
    upload(2_000, 2_500)
    seen_days = []
    for _ in range(6):
        requests = daemon.tick()
        if not requests:
            break
        seen_days += [r.partition_key for r in requests if r.partition_key]
        daemon.launch([r for r in requests if r.job_name == "ingest_landing_job"])
    else:
        raise AssertionError("the sensor kept asking for runs")

    ledger = ingestion.load_ledger(p.lake)
    assert ledger.height == 2_500
    assert ledger.get_column("key").n_unique() == 2_500
    assert sorted(set(seen_days)) == ["2024-03-04", "2024-03-05", "2024-03-06"]
    assert sum(ledger.get_column("rows")) == 2_500


def test_credentials_never_reach_logs_or_metadata(s3_platform):
    p = s3_platform
    p.drop("a.csv", GOOD)
    summary = run_landing_zone(instance=p.instance, resources={"storage": p.storage})
    assert summary.failed == [] and list(summary.days) == [date(2024, 3, 4)]
    runs = p.instance.get_runs()
    assert len(runs) == 2
    for run in runs:
        for record in p.instance.all_logs(run.run_id):
            assert S3_SECRET not in str(record)
        assert S3_SECRET not in str(run.tags) and S3_SECRET not in str(run.run_config)
