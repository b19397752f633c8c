"""Operating the platform: alerts for failed runs (record and webhook) and the freshness check."""

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from greenstream_assets.definitions import build_definitions
from greenstream_assets.defs import operations
from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.runner import run_landing_zone
from greenstream_assets.storage import lake
from greenstream_assets_tests.conftest import csv


class Webhook:
    """A local stand-in for a Slack/e-mail gateway: records what is posted."""

    def __init__(self):
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.mark.parametrize("platform", ["local"], indirect=True)
def test_a_failed_run_writes_an_alert_and_posts_it(platform, monkeypatch):
    webhook = Webhook()
    monkeypatch.setenv("GREENSTREAM_ALERT_WEBHOOK", webhook.url)
    platform.drop("a.csv", csv("M1,2024-03-04T10:00:00Z,1,kW"))
    (platform.root / "not-a-database").mkdir()
    broken = StorageResource(
        landing=platform.storage.landing,
        lake=platform.storage.lake,
        warehouse=str(platform.root / "not-a-database"),
    )
    summary = run_landing_zone(instance=platform.instance, resources={"storage": broken})
    assert len(summary.failed) == 1
    (run,) = platform.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    failure = next(
        e.dagster_event
        for e in platform.instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_event=failure,
        dagster_instance=platform.instance,
        dagster_run=run,
        resources={"storage": platform.storage},
        repository_def=build_definitions({"storage": platform.storage}).get_repository_def(),
    ).for_run_failure()
    operations.run_failure_alerts(context)

    record = lake.read_json(platform.lake, f"alerts/run_failures/{run.run_id}.json")
    assert (record["run_id"], record["job"], record["partition"]) == (
        run.run_id,
        "daily_readings_job",
        "2024-03-04",
    )
    assert "meter_readings" in record["error"]
    assert len(webhook.posts) == 1
    text = webhook.posts[0]["text"]
    assert text.startswith(f"GreenStream run {run.run_id} (daily_readings_job, day 2024-03-04) failed: ")


@pytest.mark.parametrize(
    ("hour", "landed", "passed"),
    [(10, False, False), (10, True, True), (8, False, True)],
    ids=["late-after-deadline", "landed", "before-deadline"],
)
def test_the_freshness_check_warns_only_after_the_deadline(hour, landed, passed, monkeypatch):
    monkeypatch.setattr(operations, "utc_now", lambda: datetime(2024, 3, 5, hour, 30, tzinfo=UTC))
    with dg.instance_for_test() as instance:
        if landed:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key="meter_readings", partition="2024-03-04")
            )
        result = (
            build_definitions().resolve_job_def("freshness_check_job").execute_in_process(instance=instance)
        )
        (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed is passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["partition"].value == "2024-03-04"
    assert evaluation.metadata["deadline_hour_utc"].value == 9
