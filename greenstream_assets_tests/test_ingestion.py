"""Ingestion: plain files parsed a chunk at a time stage exactly what file-by-file parsing stages."""

import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import polars as pl

from greenstream_assets import ingestion
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import LocalBlobStore
from greenstream_assets.storage.s3 import S3BlobStore
from greenstream_assets_tests.conftest import csv

MON = date(2024, 3, 4)
NOW = datetime(2024, 3, 5, 6, tzinfo=UTC)
FILES = {
    "a.csv": csv("M1,2024-03-04T00:00:00Z,1.5,kW", "M1,2024-03-04T00:15:00Z,,kW"),
    "b.csv": csv("M2,2024-03-04T00:00:00Z,2,W", "M2,2024-03-05T00:00:00Z,3,kW"),
    "c.csv": csv("kW,2024-03-04T00:00:00Z,4,M3", header="energy_unit,timestamp,energy_value,meter_id"),
    "d.csv": "",
}


def ingest(root):
    landing, lake_store = LocalBlobStore(root / "landing"), LocalBlobStore(root / "lake")
    for key, text in FILES.items():
        landing.write(key, text.encode())
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    ledger = ingestion.load_ledger(lake_store)
    days = {day: ingestion.load_day_rows(lake_store, ledger, day) for day in report.affected_days}
    return report, ledger, days


def test_plain_files_parsed_together_stage_what_file_by_file_parsing_stages(tmp_path, monkeypatch):
    report, ledger, days = ingest(tmp_path / "together")
    with monkeypatch.context() as patch:
        patch.setattr(ingestion, "read_meter_files", lambda bodies: None)  # always file by file
        one_by_one = ingest(tmp_path / "one-by-one")

    assert (report.files_staged, report.files_failed, report.rows_staged) == (3, 1, 5)
    assert report.affected_days == one_by_one[0].affected_days == [MON, date(2024, 3, 5)]
    columns = ["key", "status", "reason", "day", "rows"]
    assert ledger.select(columns).sort("key", "day").equals(one_by_one[1].select(columns).sort("key", "day"))
    for day, rows in days.items():
        assert rows.sort("source_file", "line_number").equals(
            one_by_one[2][day].sort("source_file", "line_number")
        )
    assert days[MON].sort("source_file", "line_number").select(
        "meter_id", "energy_value", "source_file", "line_number"
    ).rows() == [
        ("M1", "1.5", "a.csv", 2),
        ("M1", None, "a.csv", 3),
        ("M2", "2", "b.csv", 2),
        ("M3", "4", "c.csv", 2),
    ]
    assert days[MON].schema == pl.Schema(ingestion.RAW_STAGED_SCHEMA)


def test_staged_rows_are_uncompressed_parquet_without_statistics(tmp_path):
    """validate_day reads a day's staged rows once per slice of meters: no page to decompress
    on every pass, no statistics that no pass uses."""
    import pyarrow.parquet as pq

    ingest(tmp_path)
    staged = sorted((tmp_path / "lake" / "staging").rglob("*.parquet"))
    assert [path.parent.name for path in staged] == ["date=2024-03-04", "date=2024-03-05"]
    for path in staged:
        metadata = pq.ParquetFile(path).metadata
        columns = [metadata.row_group(0).column(i) for i in range(metadata.num_columns)]
        assert [column.compression for column in columns] == ["UNCOMPRESSED"] * 6
        assert [column.is_stats_set for column in columns] == [False] * 6


def test_backups_small_files_in_one_pack_per_chunk_large_ones_alone(tmp_path, monkeypatch):
    import zipfile

    from greenstream_assets.storage import lake

    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    big = csv(*[f"M9,2024-03-04T{h:02d}:{m:02d}:00Z,{h}.{m},kW" for h in range(24) for m in (0, 15, 30, 45)])
    files = {**FILES, "x/big.csv": big, "x/e.csv": csv("M4,2024-03-04T00:00:00Z,5,kW")}
    for key, text in files.items():
        landing.write(key, text.encode())
    monkeypatch.setattr(ingestion, "SMALL_FILE_BYTES", len(big) - 1)  # only big.csv is large
    # Chunks of a.csv + b.csv's size: [a.csv, b.csv], [c.csv, d.csv (empty, fails)], [x/big.csv], [x/e.csv].
    chunk = len(files["a.csv"]) + len(files["b.csv"])
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, chunk_bytes=chunk)
    assert (report.files_staged, report.files_failed) == (5, 1)

    ledger = ingestion.load_ledger(lake_store).filter(pl.col("status") == "staged")
    batch_of = dict(ledger.select("key", "batch").unique().iter_rows())
    part = report.batch
    assert batch_of == {
        "a.csv": f"{part}-0000",
        "b.csv": f"{part}-0000",
        "c.csv": f"{part}-0001",
        "x/big.csv": f"{part}-0002",
        "x/e.csv": f"{part}-0003",
    }
    packs = sorted(obj.key for obj in lake_store.list("raw/packs/"))
    assert packs == [f"raw/packs/{part}-{n:04d}.zip" for n in (0, 1, 3)]
    with zipfile.ZipFile(lake_store.local_path(packs[0])) as pack:
        sums = dict(ledger.select("key", "checksum").unique().iter_rows())
        assert pack.namelist() == [f"{sums['a.csv'][:16]}-a.csv", f"{sums['b.csv'][:16]}-b.csv"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in pack.infolist())
    # The large file alone, under its own name; the empty one set aside in failed/, in no pack.
    alone = [obj.key for obj in lake_store.list("raw/files/")]
    assert alone == [lake.raw_backup_key(sums["x/big.csv"], "x/big.csv")]
    assert [obj.key for obj in lake_store.list("failed/") if not obj.key.endswith(".json")] == [
        lake.failed_key(hashlib.sha256(b"").hexdigest(), "d.csv")
    ]
    # Every staged file's bytes come back exactly, and the day's manifest names where they are.
    for key, checksum, batch in ledger.select("key", "checksum", "batch").unique().iter_rows():
        assert lake.read_raw_backup(lake_store, checksum, key, batch) == files[key].encode()
    files_mon = ingestion.day_files(ledger, MON).with_columns(
        ingestion.backup_objects(ingestion.day_files(ledger, MON))
    )
    assert dict(files_mon.select("key", "backup").iter_rows()) == {
        "a.csv": f"raw/packs/{part}-0000.zip",
        "b.csv": f"raw/packs/{part}-0000.zip",
        "c.csv": f"raw/packs/{part}-0001.zip",
        "x/big.csv": lake.raw_backup_key(sums["x/big.csv"], "x/big.csv"),
        "x/e.csv": f"raw/packs/{part}-0003.zip",
    }

    # A file touched but unchanged keeps pointing at the pack that holds its bytes.
    landing.write("a.csv", files["a.csv"].encode())
    later = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, chunk_bytes=chunk)
    assert (later.files_unchanged, later.files_staged) == (1, 0)
    current = ingestion.current_versions(ingestion.load_ledger(lake_store)).filter(pl.col("key") == "a.csv")
    assert current.get_column("batch").unique().to_list() == [f"{part}-0000"]
    assert sorted(obj.key for obj in lake_store.list("raw/packs/")) == packs


def test_a_day_takes_only_the_current_version_of_each_file_of_a_batch(tmp_path):
    """A batch staged a.csv and b.csv; a.csv changes in the next batch. The day reads b.csv's rows
    from the first batch (whose a.csv rows are superseded) and a.csv's from the second."""
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    landing.write("a.csv", FILES["a.csv"].encode())
    landing.write("b.csv", FILES["b.csv"].encode())
    ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    landing.write("a.csv", csv("M1,2024-03-04T00:30:00Z,7,kW").encode())
    later = ingestion.ingest_new_files(
        landing, lake_store, RulesConfig(), now=datetime(2024, 3, 5, 7, tzinfo=UTC)
    )
    assert later.affected_days == [MON]

    ledger = ingestion.load_ledger(lake_store)
    rows = ingestion.load_day_rows(lake_store, ledger, MON)
    assert rows.select("meter_id", "timestamp", "energy_value", "source_file", "line_number").rows() == [
        ("M2", "2024-03-04T00:00:00Z", "2", "b.csv", 2),
        ("M1", "2024-03-04T00:30:00Z", "7", "a.csv", 2),
    ]
    # Tuesday's row of b.csv stays, from the first batch, with nothing superseded there.
    assert ingestion.load_day_rows(lake_store, ledger, date(2024, 3, 5)).select(
        "meter_id", "energy_value"
    ).rows() == [("M2", "3")]


def test_a_file_sent_again_unchanged_does_not_make_its_batch_look_current(tmp_path):
    """Batch 1 staged a.csv and b.csv; a.csv is sent again unchanged (listed again under batch 1)
    while b.csv changes (batch 2). Batch 1 still holds b.csv's old rows: it is read through the
    join, and the day has b.csv's new row only."""
    import os

    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    landing.write("a.csv", FILES["a.csv"].encode())
    landing.write("b.csv", FILES["b.csv"].encode())
    ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    first = ingestion.load_ledger(lake_store).get_column("batch").unique().to_list()
    landing.write("a.csv", FILES["a.csv"].encode())
    os.utime(tmp_path / "landing" / "a.csv", (1, 1))  # a new version marker, the same bytes
    landing.write("b.csv", csv("M2,2024-03-04T00:00:00Z,9,kW").encode())
    later = ingestion.ingest_new_files(
        landing, lake_store, RulesConfig(), now=datetime(2024, 3, 5, 7, tzinfo=UTC)
    )
    assert (later.files_unchanged, later.files_staged) == (1, 1)
    ledger = ingestion.load_ledger(lake_store)
    files = ingestion.day_files(ledger, MON)
    assert sorted(files.filter(pl.col("batch").is_in(first)).get_column("key").to_list()) == [
        "a.csv",
        "a.csv",
    ]
    assert set(ingestion.whole_batches(ledger, MON, files)).isdisjoint(first)
    rows = ingestion.load_day_rows(lake_store, ledger, MON)
    assert rows.sort("source_file", "line_number").select(
        "meter_id", "energy_value", "source_file"
    ).rows() == [
        ("M1", "1.5", "a.csv"),
        ("M1", None, "a.csv"),
        ("M2", "9", "b.csv"),
    ]


def test_a_manifest_pins_the_rows_its_day_had_when_it_was_written(tmp_path):
    """The raw rows a manifest records (its files and the batches read whole) are read back as the
    day had them, after the ledger moved on; a manifest without whole_batches (written before
    they were recorded) reads every batch through the join, to the same rows."""
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    landing.write("a.csv", FILES["a.csv"].encode())
    landing.write("b.csv", FILES["b.csv"].encode())
    ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    first = ingestion.load_ledger(lake_store)
    first_files = ingestion.day_files(first, MON)
    (batch,) = first_files.get_column("batch").unique().to_list()
    assert ingestion.whole_batches(first, MON, first_files) == [batch]
    manifest = {
        "day": MON.isoformat(),
        "whole_batches": ingestion.whole_batches(first, MON, first_files),
        "files": first_files.to_dicts(),
    }
    landing.write("a.csv", csv("M1,2024-03-04T00:30:00Z,7,kW").encode())
    ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=datetime(2024, 3, 5, 7, tzinfo=UTC))
    ledger = ingestion.load_ledger(lake_store)
    files = ingestion.day_files(ledger, MON)
    # The first batch's a.csv rows are superseded: it is no longer read whole.
    assert ingestion.whole_batches(ledger, MON, files) == sorted(set(files.get_column("batch")) - {batch})

    def rows(slices) -> list[tuple]:
        with slices as parts:
            frame = pl.concat(list(parts))
        return frame.select("meter_id", "energy_value", "source_file", "line_number").rows()

    then = [("M1", "1.5", "a.csv", 2), ("M1", None, "a.csv", 3), ("M2", "2", "b.csv", 2)]
    assert rows(ingestion.manifest_row_slices(lake_store, manifest, slice_rows=10**6)) == then
    # Cut in slices of meters, the same rows (a slice's in file order).
    sliced = rows(ingestion.manifest_row_slices(lake_store, manifest, slice_rows=1))
    assert sorted(sliced, key=str) == sorted(then, key=str)
    assert [r for r in sliced if r[0] == "M1"] == then[:2]
    legacy = {k: v for k, v in manifest.items() if k != "whole_batches"}
    assert rows(ingestion.manifest_row_slices(lake_store, legacy, slice_rows=10**6)) == then
    # Today's rows, for comparison: a.csv's new version.
    assert rows(ingestion.day_row_slices(lake_store, ledger, MON, slice_rows=10**6)) == [
        ("M2", "2", "b.csv", 2),
        ("M1", "7", "a.csv", 2),
    ]


def test_a_day_is_done_once_its_four_last_steps_recorded_its_files_and_an_older_day_on_two(tmp_path):
    _, ledger, _ = ingest(tmp_path)
    store = LocalBlobStore(tmp_path / "lake")
    digest = ingestion.files_digest(ingestion.day_files(ledger, MON))
    lake.write_json(store, lake.raw_manifest_key(MON), {"files_digest": digest})

    def stale() -> bool:
        return MON in ingestion.stale_days(store, ledger)

    assert lake.DAY_DONE_STEPS == ("daily_peaks", "faulty_meters", "faulty_meter_incidents", "daily_quality")
    assert stale()
    for step in lake.DAY_DONE_STEPS[:-1]:
        lake.mark_day_done(store, MON, step)
        assert stale()  # a run that failed before daily_quality
    lake.mark_day_done(store, MON, "daily_quality")
    assert not stale()

    # A day finished before the last two steps recorded it: the markers of the first two, holding
    # only the digest, say it is done; with another digest, it is stale.
    for step in lake.DAY_DONE_STEPS:
        store.delete(lake.day_done_key(MON, step))
    for step in ("daily_peaks", "faulty_meters"):
        lake.write_json(store, lake.day_done_key(MON, step), {"files_digest": digest})
    assert not stale()
    lake.write_json(store, lake.day_done_key(MON, "faulty_meters"), {"files_digest": "an older digest"})
    assert stale()
    # Run again by this version and failed after the first three: stale, whatever the old markers.
    for step in lake.DAY_DONE_STEPS[:-1]:
        lake.mark_day_done(store, MON, step)
    assert stale()
    lake.mark_day_done(store, MON, "daily_quality")
    assert not stale()


class ThreadCounts:
    """ThreadPoolExecutor standing in for ingestion's, recording how many workers it was given."""

    def __init__(self) -> None:
        self.workers: list[int] = []

    def __call__(self, max_workers: int):
        self.workers.append(max_workers)
        return ThreadPoolExecutor(max_workers=max_workers)


class RemoteLake(LocalBlobStore):
    """A folder standing in for a store of network round trips (S3 asks for 16 threads)."""

    io_workers = 16


def test_files_are_fetched_on_the_threads_the_busier_store_asks_for(tmp_path, monkeypatch):
    # A folder's reads are quick system calls among Python work holding the GIL: 4 threads. With
    # S3 on either side, 16; and the caller's own number wins.
    counts = ThreadCounts()
    monkeypatch.setattr(ingestion, "ThreadPoolExecutor", counts)
    landing = LocalBlobStore(tmp_path / "landing")
    landing.write("a.csv", FILES["a.csv"].encode())
    cases = [
        (LocalBlobStore(tmp_path / "lake1"), None),
        (RemoteLake(tmp_path / "lake2"), None),
        (LocalBlobStore(tmp_path / "lake3"), 7),
    ]
    for lake_store, workers in cases:
        report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, max_workers=workers)
        assert report.rows_staged == 2
    assert counts.workers == [4, 16, 7]
    assert (LocalBlobStore.io_workers, S3BlobStore.io_workers) == (4, 16)


def test_a_local_file_whose_name_holds_a_backslash_is_set_aside_and_the_rest_ingested(tmp_path):
    # A plain character on Linux, but never a lake key: the file is kept under failed/ with its
    # note, and every other file of the landing zone is staged (it used to fail the whole run).
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    landing.write("a.csv", FILES["a.csv"].encode())
    (tmp_path / "landing" / "m\\1.csv").write_bytes(FILES["b.csv"].encode())
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert (report.files_staged, report.files_failed, report.rows_staged) == (1, 1, 2)
    assert report.failures == [
        {"key": "m\\1.csv", "reason": "unsafe_key", "detail": "unsafe object key 'm\\\\1.csv'"}
    ]
    (note_key,) = [o.key for o in lake_store.list("failed/") if o.key.endswith(".reason.json")]
    note = lake.read_json(lake_store, note_key)
    assert (note["source_key"], note["reason"]) == ("m\\1.csv", "unsafe_key")
    assert lake_store.read(note_key.removesuffix(".reason.json")) == FILES["b.csv"].encode()
    # Recorded in the ledger: the next ingestion reads nothing again.
    again = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert (again.files_staged, again.files_failed, again.files_unchanged) == (0, 0, 0)
