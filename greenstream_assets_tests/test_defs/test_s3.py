"""The platform on S3 (moto's server over HTTP): hostile keys, throttling, listings past a page,
uploads racing a tick, and secrets kept out of logs."""

import threading
from datetime import UTC, date, datetime

import dagster as dg
import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets.storage.s3 import S3BlobStore
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


def test_dotted_keys_and_archived_objects_are_processed_and_never_block_ingestion(s3_platform):
    # A ".m2.csv" was never listed, a ".keep" never noted; a GLACIER object failed every retry of
    # the ingestion step (InvalidObjectState), so no other file was ever ingested.
    p = s3_platform
    client, bucket = p.s3.client(), p.landing.bucket
    client.put_object(Bucket=bucket, Key="landing/a.csv", Body=GOOD.encode())
    client.put_object(
        Bucket=bucket, Key="landing/d/.m2.csv", Body=csv("M2,2024-03-04T11:00:00Z,2,kW").encode()
    )
    client.put_object(Bucket=bucket, Key="landing/d/.keep", Body=b"")
    cold = csv("M3,2024-03-04T12:00:00Z,3,kW").encode()
    client.put_object(Bucket=bucket, Key="landing/cold.csv", Body=cold, StorageClass="GLACIER")

    summary = run_landing_zone(instance=p.instance, resources={"storage": p.storage})
    assert summary.failed == []
    assert summary.ingest == {"files_staged": 2, "files_failed": 2, "rows_staged": 2}
    assert p.query("SELECT meter_id, source_file FROM meter_readings ORDER BY meter_id").rows() == [
        ("M1", "a.csv"),
        ("M2", "d/.m2.csv"),
    ]
    notes = {}
    for obj in p.lake.list("failed/"):
        if obj.key.endswith(".reason.json"):
            note = lake.read_json(p.lake, obj.key)
            notes[note["source_key"]] = note
    assert {key: note["reason"] for key, note in notes.items()} == {
        "d/.keep": "empty_file",
        "cold.csv": "archived_object",
    }
    assert notes["cold.csv"]["checksum"] is None and "InvalidObjectState" in notes["cold.csv"]["detail"]
    # The empty marker is kept beside its note; the archived object's bytes could not be had.
    copies = [o.key for o in p.lake.list("failed/") if not o.key.endswith(".reason.json")]
    assert len(copies) == 1 and p.lake.read(copies[0]) == b""
    ledger = ingestion.load_ledger(p.lake)
    assert ledger.filter(pl.col("key") == "cold.csv").select("status", "reason", "checksum").rows() == [
        ("failed", "archived_object", None)
    ]
    # Recorded: not read again on every tick, until the object changes.
    assert ingestion.unseen_objects(p.landing, ledger) == []


class DenyingClient:
    """A boto3 client whose GETs of ``denied`` keys are refused as S3 refuses them (403
    AccessDenied: a bucket policy, a KMS key the role may not use)."""

    def __init__(self, inner, denied: set[str]) -> None:
        self.inner, self.denied = inner, denied

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_object(self, **kwargs):
        if kwargs["Key"] in self.denied:
            from botocore.exceptions import ClientError

            raise ClientError(
                {
                    "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                "GetObject",
            )
        return self.inner.get_object(**kwargs)


class VanishingLanding(S3BlobStore):
    """An S3 landing zone whose ``gone`` keys are deleted after the listing, before their GET."""

    gone: set[str]

    def read(self, key: str) -> bytes:
        if key in self.gone:
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        return super().read(key)


def test_denied_objects_are_noted_and_deleted_keys_skipped_while_the_rest_is_ingested(s3_platform):
    p = s3_platform
    for key in ("a.csv", "denied.csv", "deleted.csv"):
        p.drop(key, GOOD)
    bucket = p.landing.bucket
    landing = VanishingLanding(p.landing.url, lambda: DenyingClient(p.s3.client(), {"landing/denied.csv"}))
    landing.gone = {"deleted.csv"}
    report = ingestion.ingest_new_files(landing, p.lake, RulesConfig(), now=datetime(2024, 3, 5, tzinfo=UTC))
    assert (report.files_staged, report.files_failed, report.rows_staged) == (1, 1, 1)
    assert [(f["key"], f["reason"]) for f in report.failures] == [("denied.csv", "access_denied")]
    ledger = ingestion.load_ledger(p.lake)
    assert sorted(ledger.select("key", "status").rows()) == [("a.csv", "staged"), ("denied.csv", "failed")]
    (note,) = [o.key for o in p.lake.list("failed/")]
    assert lake.read_json(p.lake, note)["detail"] == "S3 GetObject: AccessDenied: Access Denied"
    # The deleted key left no trace, and its absence asks for nothing more.
    assert "landing/deleted.csv" not in [
        o["Key"] for o in p.s3.client().list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert ingestion.unseen_objects(landing, ledger) == []
