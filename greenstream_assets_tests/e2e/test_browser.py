"""What a person sees in the Dagster UI, driven through headless Chromium (Playwright): the lineage
with every asset and its check status, a failing check with its failure sample, and a day
re-materialized with the Materialize button until its run succeeds. Each step leaves a screenshot
in docs/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import polars as pl
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from greenstream_assets.defs.resources import StorageResource
from greenstream_assets.runner import run_landing_zone
from greenstream_assets_tests.e2e.conftest import DAILY_JOB, LocalPlatform, meter_day_file
from greenstream_assets_tests.e2e.dagster_dev import REPO, DagsterDev

pytestmark = [
    pytest.mark.slow,
    # dagster-graphql's client still calls gql with arguments gql has deprecated.
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

SCREENSHOTS = REPO / "docs" / "screenshots"
# Debian's Chromium, never a downloaded build (`playwright install` is not used).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Large enough for the lineage to draw full asset nodes (name, checks, partitions), not minimal ones.
LINEAGE_VIEWPORT = {"width": 2400, "height": 1500}
PAGE_VIEWPORT = {"width": 1600, "height": 1000}
UI_TIMEOUT_MS = 60_000
RUN_TIMEOUT_MS = 240_000

METERS = ["MTR-001", "MTR-002", "MTR-003", "MTR-004"]
D1, D2 = date(2024, 3, 4), date(2024, 3, 5)
UPLOAD = [
    meter_day_file("upload-01/2024-03-04.csv", D1, METERS),
    meter_day_file("upload-01/2024-03-05.csv", D2, METERS),
]
GROUPS = ["ingestion", "quality", "warehouse", "reports"]
CORE_ASSETS = [
    "landing_files",
    "raw_meter_files",
    "cleansed_readings",
    "quarantined_readings",
    "flagged_anomalies",
    "meter_readings",
    "meter_readings_archive",
    "daily_peaks",
    "faulty_meters",
]
# Assets whose checks are all per-day checks of the core chain: their node sums them up exactly.
CHECK_SUMMARIES = {
    "raw_meter_files": "1 / 1 Passed",
    "cleansed_readings": "2 / 2 Passed",
    "meter_readings_archive": "1 / 1 Passed",
}


@dataclass
class UI:
    server: DagsterDev
    platform: LocalPlatform
    page: Page

    def open(self, path: str) -> None:
        self.page.goto(self.server.url + path)

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        # Animations finished: a dialog is captured as shown, not half faded in.
        self.page.screenshot(path=str(SCREENSHOTS / name), animations="disabled")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    """Two days processed (as `greenstream run` does, on the instance the UI then shows), then
    `dagster dev` and one headless Chromium page for the module."""
    platform = LocalPlatform(tmp_path_factory.mktemp("browser"))
    platform.drop(*UPLOAD)
    server = DagsterDev(platform.root / "home", platform.env)
    storage = StorageResource(
        landing=str(platform.landing), lake=str(platform.lake), warehouse=str(platform.warehouse)
    )
    instance = server.instance()
    try:
        summary = run_landing_zone(instance=instance, resources={"storage": storage})
    finally:
        instance.dispose()
    assert not summary.failed and sorted(summary.days) == [D1, D2], summary.render()

    server.start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport=PAGE_VIEWPORT)
                page.set_default_timeout(UI_TIMEOUT_MS)
                expect.set_options(timeout=UI_TIMEOUT_MS)
                yield UI(server, platform, page)
            finally:
                browser.close()
    finally:
        server.stop()


def test_the_lineage_shows_every_asset_and_its_checks(ui: UI) -> None:
    page = ui.page
    page.set_viewport_size(LINEAGE_VIEWPORT)
    # Every group expanded (group ids with and without per-code-location grouping).
    repository = ui.server.repository()
    code_location = f"{repository['repositoryName']}@{repository['repositoryLocationName']}"
    expanded = [f"global@global:{g}" for g in GROUPS] + [f"{code_location}:{g}" for g in GROUPS]
    ui.open("/asset-groups?expanded=" + ",".join(expanded))
    for asset in CORE_ASSETS:
        expect(page.locator(f'[data-tooltip="{asset}"]').first).to_be_visible()
    for asset, text in CHECK_SUMMARIES.items():
        expect(page.locator(f'a[href="/assets/{asset}?view=checks"]').first).to_have_text(text)
    # The table's node shows its checks too (how many depends on checks outside the core chain).
    expect(page.locator('a[href="/assets/meter_readings?view=checks"]').first).to_contain_text(" / ")
    ui.screenshot("01-lineage.png")
    page.set_viewport_size(PAGE_VIEWPORT)


def test_a_failing_check_shows_its_failure_sample(ui: UI) -> None:
    """A day whose flagged readings were corrupted in the lake (one negative kW): re-loading the
    table from them fails the non-blocking table_schema check, and the UI shows why."""
    page, server, platform = ui.page, ui.server, ui.platform
    day = D2.isoformat()
    layer = platform.lake / "layers" / "flagged_anomalies" / f"date={day}.arrow"
    flagged = pl.read_ipc(layer.read_bytes())  # a copy: the file is rewritten below
    corrupted = flagged.with_columns(
        energy_kw=pl.when(pl.int_range(pl.len()) == 0).then(-1.5).otherwise(pl.col("energy_kw"))
    )
    corrupted.write_ipc(layer, compression="lz4")
    run_id = server.launch_materialization(["meter_readings"], day)
    # Non-blocking: the run succeeds, the check fails.
    assert server.wait_for_run(run_id) == "SUCCESS", server.log_tail()

    ui.open("/assets/meter_readings?view=checks&checkDetail=table_schema")
    expect(page.get_by_text("non-blocking", exact=True).first).to_be_visible()
    evaluation = page.get_by_text("Failed", exact=True).first
    expect(evaluation).to_be_visible()
    expect(page.get_by_text(day, exact=True).first).to_be_visible()
    metadata_row = page.locator("tr", has_text="failure_sample")
    expect(page.locator("tr", has_text="failures[energy_kw:greater_than_or_equal_to(0)]")).to_contain_text(
        "1"
    )
    ui.screenshot("02-failing-check.png")

    metadata_row.get_by_text("[Show Markdown]").click()
    sample = page.get_by_role("dialog")
    expect(sample).to_contain_text("failure_sample")
    expect(sample).to_contain_text("energy_kw")
    expect(sample).to_contain_text("greater_than_or_equal_to(0)")
    expect(sample).to_contain_text("-1.5")
    ui.screenshot("03-failure-sample.png")
    sample.get_by_role("button", name="Close").click()


def test_materialize_one_partition_from_the_ui_and_see_the_run_succeed(ui: UI) -> None:
    """Rebuild the day from its raw rows with the job page's Materialize button, one partition."""
    page, server, platform = ui.page, ui.server, ui.platform
    day, file = D2.isoformat(), UPLOAD[1]
    location = server.repository()["repositoryLocationName"]
    ui.open(f"/locations/{location}/jobs/{DAILY_JOB}")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Launch runs to materialize")
    expect(dialog.get_by_role("textbox").first).to_be_visible()
    # The dialog opens on the last 90 days; the day is older.
    show_all = dialog.get_by_role("button", name="Show all partitions")
    if show_all.is_visible():
        show_all.click()
    partitions = dialog.get_by_placeholder(re.compile(r"^ex: "))
    partitions.fill(day)
    partitions.press("Enter")
    expect(dialog).to_contain_text("1 partition")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    ui.screenshot("04-materialize-dialog.png")
    launch.click()

    # The toast links to the new run; follow it and watch the run until it succeeds.
    view = page.get_by_role("link", name="View", exact=True)
    expect(view).to_have_attribute("href", re.compile(r"^/runs/[0-9a-f-]{36}$"))
    run_id = view.get_attribute("href").rsplit("/", 1)[-1]
    view.click()
    expect(page.get_by_text(f"partition: {day}").first).to_be_visible()
    expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    ui.screenshot("05-run-success.png")
    assert server.wait_for_run(run_id) == "SUCCESS"

    # The day is whole again: the check passes, and the table holds the day's rows once.
    ui.open("/assets/meter_readings?view=checks&checkDetail=table_schema")
    expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
    expect(page.get_by_text(day, exact=True).first).to_be_visible()
    ui.screenshot("06-check-passed.png")
    server.wait_until_idle()
    assert platform.rows_per_day()[day] == file.kept
    assert platform.query("SELECT count(*) FROM meter_readings WHERE energy_kw < 0") == [(0,)]
    assert platform.duplicate_readings() == 0
