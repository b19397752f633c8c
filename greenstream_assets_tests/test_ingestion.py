"""Ingestion: plain files parsed a chunk at a time stage exactly what file-by-file parsing stages."""

import errno
import hashlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

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


def test_every_staged_file_is_backed_up_alone_byte_for_byte(tmp_path, monkeypatch):
    """Small files included: they went into one zip per chunk under raw/packs/. Each staged
    version now has its own object under raw/files/, named in the ledger and in the day's backup
    objects; a failed file is kept in failed/ only."""
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    big = csv(*[f"M9,2024-03-04T{h:02d}:{m:02d}:00Z,{h}.{m},kW" for h in range(24) for m in (0, 15, 30, 45)])
    files = {**FILES, "x/big.csv": big, "x/e.csv": csv("M4,2024-03-04T00:00:00Z,5,kW")}
    for key, text in files.items():
        landing.write(key, text.encode())
    monkeypatch.setattr(ingestion, "SMALL_FILE_BYTES", len(big) - 1)  # big.csv is parsed alone
    chunk = len(files["a.csv"]) + len(files["b.csv"])  # several chunks
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, chunk_bytes=chunk)
    assert (report.files_staged, report.files_failed) == (5, 1)

    ledger = ingestion.load_ledger(lake_store)
    staged = ledger.filter(pl.col("status") == "staged")
    sums = dict(staged.select("key", "checksum").unique().iter_rows())
    expected = {key: lake.raw_backup_key(checksum, key) for key, checksum in sums.items()}
    assert list(lake_store.list("raw/packs/")) == []
    assert sorted(obj.key for obj in lake_store.list("raw/")) == sorted(expected.values())
    for key, backup in expected.items():
        assert lake_store.read(backup) == landing.read(key) == files[key].encode()
    assert dict(staged.select("key", "backup").unique().iter_rows()) == expected
    assert ledger.filter(pl.col("status") == "failed").get_column("backup").to_list() == [None]
    assert [obj.key for obj in lake_store.list("failed/") if not obj.key.endswith(".json")] == [
        lake.failed_key(hashlib.sha256(b"").hexdigest(), "d.csv")
    ]
    files_mon = ingestion.day_files(ledger, MON)
    assert dict(zip(files_mon["key"], ingestion.backup_objects(files_mon), strict=True)) == {
        key: expected[key] for key in ("a.csv", "b.csv", "c.csv", "x/big.csv", "x/e.csv")
    }

    # A file touched but unchanged keeps pointing at the object that holds its bytes.
    landing.write("a.csv", files["a.csv"].encode())
    later = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, chunk_bytes=chunk)
    assert (later.files_unchanged, later.files_staged) == (1, 0)
    current = ingestion.current_versions(ingestion.load_ledger(lake_store)).filter(pl.col("key") == "a.csv")
    assert current.get_column("backup").unique().to_list() == [expected["a.csv"]]


def test_an_ingestion_of_many_small_files_packs_them_untouched_one_zip_per_chunk(tmp_path, monkeypatch):
    """A day of thousands of per-meter files: each chunk's small files go up as the members of one
    uncompressed zip, byte for byte, recorded per file in the ledger and read back through it; a
    larger file of the same ingestion is still backed up alone."""
    import zipfile

    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    big = csv(*[f"M9,2024-03-04T{h:02d}:{m:02d}:00Z,{h}.{m},kW" for h in range(24) for m in (0, 15, 30, 45)])
    files = {**FILES, "x/big.csv": big}
    for key, text in files.items():
        landing.write(key, text.encode())
    monkeypatch.setattr(ingestion, "SMALL_FILE_BYTES", len(big) - 1)
    monkeypatch.setattr(ingestion, "PACK_MIN_FILES", 4)  # a.csv, b.csv, c.csv and d.csv are small
    chunk = len(files["a.csv"]) + len(files["b.csv"])
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, chunk_bytes=chunk)
    assert (report.files_staged, report.files_failed) == (4, 1)

    staged = ingestion.load_ledger(lake_store).filter(pl.col("status") == "staged")
    backups = dict(staged.select("key", "backup").unique().iter_rows())
    sums = dict(staged.select("key", "checksum").unique().iter_rows())
    assert backups["x/big.csv"] == lake.raw_backup_key(sums["x/big.csv"], "x/big.csv")
    packs = {backups[key] for key in ("a.csv", "b.csv", "c.csv")}
    assert all(pack.startswith("raw/packs/") for pack in packs) and len(packs) >= 2  # several chunks
    assert sorted(obj.key for obj in lake_store.list("raw/packs/")) == sorted(packs)
    for key in ("a.csv", "b.csv", "c.csv", "x/big.csv"):
        batch = staged.filter(pl.col("key") == key).get_column("batch")[0]
        assert lake.read_raw_backup(lake_store, sums[key], key, batch, backups[key]) == files[key].encode()
    with zipfile.ZipFile(tmp_path / "lake" / backups["a.csv"]) as pack:
        member = pack.getinfo(lake.legacy_raw_backup_key(sums["a.csv"], "a.csv").removeprefix("raw/files/"))
        assert member.compress_type == zipfile.ZIP_STORED
        assert pack.read(member) == files["a.csv"].encode()
    day = ingestion.day_files(ingestion.load_ledger(lake_store), MON)
    assert dict(zip(day["key"], ingestion.backup_objects(day), strict=True)) == {
        key: backups[key] for key in day["key"]
    }


def test_days_ingested_with_packs_still_find_their_backups(tmp_path, monkeypatch):
    """An ingestion from before per-file backups: its ledger has no backup column and its small
    files are members of their chunk's zip under raw/packs/. Its days still name and read those
    packs, beside files ingested since (alone), and a file of it re-sent unchanged keeps its pack."""
    from greenstream_assets_tests.test_storage.test_packs import legacy_pack

    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    big = csv(*[f"M9,2024-03-04T{h:02d}:00:00Z,{h},kW" for h in range(24)])
    files = {"a.csv": FILES["a.csv"], "b.csv": FILES["b.csv"], "x/big.csv": big}
    for key, text in files.items():
        landing.write(key, text.encode())
    ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    monkeypatch.setattr(ingestion, "LEGACY_PACKED_BYTES", len(big) - 1)  # big.csv was backed up alone
    # Made what such an ingestion left: the ledger's old columns, small files in packs only.
    for obj in lake_store.list(lake.LEDGER_FILES):
        lake.write_parquet(lake_store, obj.key, lake.read_parquet(lake_store, obj.key).drop("backup"))
    ledger = ingestion.load_ledger(lake_store)
    assert ledger.get_column("backup").null_count() == ledger.height
    packed = ledger.filter(pl.col("size") < len(big)).select("batch", "checksum", "key").unique()
    for (batch,), members in packed.group_by("batch"):
        members = [(checksum, key, files[key].encode()) for _, checksum, key in members.iter_rows()]
        legacy_pack(lake_store, batch, members)
        for checksum, key, _ in members:
            lake_store.delete(lake.raw_backup_key(checksum, key))

    def backups() -> dict[str, str]:
        day = ingestion.day_files(ingestion.load_ledger(lake_store), MON)
        return dict(zip(day["key"], ingestion.backup_objects(day), strict=True))

    (old_batch,) = ledger.get_column("batch").unique().to_list()
    sums = dict(ledger.select("key", "checksum").unique().iter_rows())
    assert backups() == {
        "a.csv": lake.raw_pack_key(old_batch),
        "b.csv": lake.raw_pack_key(old_batch),
        "x/big.csv": lake.raw_backup_key(sums["x/big.csv"], "x/big.csv"),
    }
    for key, backup in backups().items():
        assert lake.read_raw_backup(lake_store, sums[key], key, old_batch, backup) == files[key].encode()
        assert lake.read_raw_backup(lake_store, sums[key], key, old_batch) == files[key].encode()

    # Ingested since: c.csv alone; a.csv sent again unchanged still points at the pack.
    landing.write("c.csv", FILES["c.csv"].encode())
    landing.write("a.csv", files["a.csv"].encode())
    later = ingestion.ingest_new_files(
        landing, lake_store, RulesConfig(), now=datetime(2024, 3, 5, 7, tzinfo=UTC)
    )
    assert (later.files_staged, later.files_unchanged) == (1, 1)
    c_sum = hashlib.sha256(FILES["c.csv"].encode()).hexdigest()
    assert backups() == {
        "a.csv": lake.raw_pack_key(old_batch),
        "b.csv": lake.raw_pack_key(old_batch),
        "c.csv": lake.raw_backup_key(c_sum, "c.csv"),
        "x/big.csv": lake.raw_backup_key(sums["x/big.csv"], "x/big.csv"),
    }
    assert lake_store.read(lake.raw_backup_key(c_sum, "c.csv")) == FILES["c.csv"].encode()
    assert [obj.key for obj in lake_store.list("raw/packs/")] == [lake.raw_pack_key(old_batch)]


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
    """ThreadPoolExecutor standing in for ingestion's, recording how many workers each pool was
    given: the fetching pool's, and the staging writers' (named)."""

    def __init__(self) -> None:
        self.workers: list[int] = []
        self.named: dict[str, int] = {}

    def __call__(self, max_workers: int, thread_name_prefix: str = ""):
        if thread_name_prefix:
            self.named[thread_name_prefix] = max_workers
        else:
            self.workers.append(max_workers)
        return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_name_prefix)


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
    assert counts.named == {"staging": ingestion.STAGING_WRITERS}
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


class VanishingLanding(LocalBlobStore):
    """A landing folder whose ``gone`` files are deleted after the listing, before their read."""

    def __init__(self, root, gone: set[str]) -> None:
        super().__init__(root)
        self.gone = gone

    def read(self, key: str) -> bytes:
        if key in self.gone:
            (self.root / key).unlink(missing_ok=True)
        return super().read(key)


def test_a_file_deleted_between_listing_and_read_is_skipped_and_the_rest_ingested(tmp_path):
    # It used to fail the whole step on every retry. Not staged, not failed, not in the ledger:
    # the next listing decides (gone: nothing; back: ingested).
    landing = VanishingLanding(tmp_path / "landing", {"b.csv"})
    lake_store = LocalBlobStore(tmp_path / "lake")
    landing.write("a.csv", FILES["a.csv"].encode())
    landing.write("b.csv", FILES["b.csv"].encode())
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert (report.files_staged, report.files_failed, report.rows_staged) == (1, 0, 2)
    assert ingestion.load_ledger(lake_store).get_column("key").unique().to_list() == ["a.csv"]
    assert list(lake_store.list("failed/")) == []
    again = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert (again.batch, again.files_staged, again.files_failed) == (None, 0, 0)

    # Every new file gone: no ledger file, no batch note, nothing for the sensor to look at.
    landing.write("c.csv", FILES["c.csv"].encode())
    landing.gone.add("c.csv")
    notes = [obj.key for obj in lake_store.list(lake.LEDGER_BATCHES)]
    gone = ingestion.ingest_new_files(
        landing, lake_store, RulesConfig(), now=datetime(2024, 3, 5, 7, tzinfo=UTC)
    )
    assert (gone.batch, gone.files_staged, gone.affected_days) == (None, 0, [])
    assert [obj.key for obj in lake_store.list(lake.LEDGER_BATCHES)] == notes

    # Sent again: ingested as any new file.
    landing.gone.clear()
    landing.write("b.csv", FILES["b.csv"].encode())
    back = ingestion.ingest_new_files(
        landing, lake_store, RulesConfig(), now=datetime(2024, 3, 5, 8, tzinfo=UTC)
    )
    assert (back.files_staged, back.rows_staged) == (1, 2)


def test_long_file_names_are_ingested_with_lake_names_a_file_system_holds(tmp_path):
    """A landing folder can hold a 255-byte name, and the lake's keys for it add a checksum, a
    note suffix and, for writes, a temporary name: the file system refused them (ENAMETOOLONG) and
    the whole ingestion failed, every time. Lake names are shortened, deterministically."""
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    long_names = {
        "d/" + "m" * 216 + ".csv": FILES["a.csv"],  # 220 bytes
        "d/" + "zähler-" * 31 + "x.csv": FILES["b.csv"],  # 253 bytes, two-byte characters
        "n" * 251 + ".csv": "",  # 255 bytes, empty: to failed/ with its note
    }
    (tmp_path / "landing" / "d").mkdir(parents=True)
    for key, text in long_names.items():
        assert len(key.rpartition("/")[2].encode()) in (220, 253, 255)
        (tmp_path / "landing" / key).write_bytes(text.encode())
    landing.write("c.csv", FILES["c.csv"].encode())

    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert (report.files_staged, report.files_failed, report.rows_staged) == (3, 1, 5)
    for obj in lake_store.list():
        assert all(len(segment.encode()) <= 255 for segment in obj.key.split("/")), obj.key
    ledger = ingestion.load_ledger(lake_store)
    for key, backup in (
        ledger.filter(pl.col("status") == "staged").select("key", "backup").unique().iter_rows()
    ):
        assert lake_store.read(backup) == landing.read(key)
    # The shortened names keep the start of the name and its extension.
    backup = ledger.filter(pl.col("key") == "d/" + "m" * 216 + ".csv").get_column("backup")[0]
    assert backup.startswith("raw/files/d/") and "-mmmm" in backup and backup.endswith(".csv")
    empty = hashlib.sha256(b"").hexdigest()
    note = lake.read_json(lake_store, lake.failed_note_key(empty, "n" * 251 + ".csv"))
    assert (note["source_key"], note["reason"]) == ("n" * 251 + ".csv", "empty_file")
    assert lake_store.read(lake.failed_key(empty, "n" * 251 + ".csv")) == b""


class RecordingLake(LocalBlobStore):
    """A lake folder that records its writes (key, durable) and syncs, in order."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.events: list[tuple[str, bool | None]] = []
        self.cached: dict[str, bool] = {}

    def write(self, key: str, data: bytes, *, durable: bool = True, cached: bool = True) -> None:
        super().write(key, data, durable=durable, cached=cached)
        self.events.append((key, durable))
        self.cached[key] = cached

    def sync(self) -> None:
        super().sync()
        self.events.append(("sync", None))


def test_backups_are_made_durable_at_once_before_the_ledger_names_them(tmp_path):
    # An fsync per backup was one journal commit per per-meter file: one sync of the lake's file
    # system instead, and the ledger (what says a file is staged) only after it.
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), RecordingLake(tmp_path / "lake")
    for key, text in FILES.items():
        landing.write(key, text.encode())
    ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    keys = [key for key, _ in lake_store.events]
    backups = [i for i, (key, _) in enumerate(lake_store.events) if key.startswith("raw/")]
    assert len(backups) == 3 and all(lake_store.events[i][1] is False for i in backups)
    others = [durable for key, durable in lake_store.events if not key.startswith("raw/") and key != "sync"]
    assert all(others)  # staging, failed/, ledger: durable when written, as before
    ledger = next(i for i, key in enumerate(keys) if key.startswith(lake.LEDGER_FILES))
    assert max(backups) < keys.index("sync") < ledger


def test_a_large_files_backup_is_written_durable_and_around_the_page_cache(tmp_path):
    # A day's backups are written once and seldom read: kept out of the page cache (blobs.py,
    # DIRECT_MIN_BYTES), unlike the staged rows validate_day reads right after.
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), RecordingLake(tmp_path / "lake")
    lines = "".join(f"MTR-{i:05d},2024-03-04T00:15:00Z,1.5,kW\n" for i in range(40_000))
    big = ("meter_id,timestamp,energy_value,energy_unit\n" + lines).encode()
    assert len(big) > 1 << 20
    landing.write("2024-03-04/big.csv", big)
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert report.rows_staged == 40_000
    (backup,) = [key for key in lake_store.cached if key.startswith("raw/")]
    assert dict(lake_store.events)[backup] is True and lake_store.cached[backup] is False
    assert lake_store.read(backup) == big
    staged = [key for key in lake_store.cached if key.startswith("staging/")]
    assert len(staged) == 1 and lake_store.cached[staged[0]] is True


# Timestamps a chunk can hold: one day's readings (UTC, with an offset, local), readings of the
# day before and after, text that is no instant, an empty value, days outside what may be staged.
TIMESTAMP_POOL = [
    "2024-03-04T00:00:00Z",
    "2024-03-04T23:45:00Z",
    "2024-03-04 12:15",
    "2024-03-04T10:00:00+01:00",
    "2024-03-05T00:30:00+01:00",
    "2024-03-03T23:45:00Z",
    "2024-03-05T00:15:00Z",
    "2024-03-04T00:15:00-05:00",
    "not a time",
    "",
    None,
    "2031-01-01T00:00:00Z",
    "1999-01-01T00:00:00Z",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TIMESTAMP_POOL), min_size=1, max_size=12))
def test_a_chunk_of_one_day_is_found_from_its_distinct_timestamps_as_row_by_row(stamps):
    # _single_day (the distinct texts only) gives the day _assign_days gives every row, exactly
    # when every row has that day from its own timestamp; otherwise the rows go through
    # _assign_days as before.
    config = RulesConfig()
    rows = pl.DataFrame(
        {"timestamp": stamps, "source_file": ["f.csv"] * len(stamps)},
        schema={"timestamp": pl.String, "source_file": pl.String},
    )
    # Each row's own day, worked out here as the rule states it: the UTC date of its instant, when
    # that is between the earliest day and the day after the ingestion.
    parsed = ingestion.parse_timestamp_column(rows.get_column("timestamp"), config.timezone)
    own = pl.Series(
        [
            ts.date() if ts is not None and config.earliest_day <= ts.date() <= date(2024, 3, 6) else None
            for ts in parsed.to_list()
        ],
        dtype=pl.Date,
    )
    expected = own[0] if own.null_count() == 0 and own.n_unique() == 1 else None
    assert ingestion._single_day(rows.get_column("timestamp"), config, NOW.date()) == expected
    if expected is not None:
        assigned = ingestion._assign_days(rows, config, NOW.date()).get_column("day")
        assert assigned.to_list() == [expected] * len(stamps)


def test_a_chunk_with_rows_of_two_days_is_staged_per_day_with_each_files_counts(tmp_path):
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    header = "meter_id,timestamp,energy_value,energy_unit\n"
    landing.write(
        "one-day.csv", (header + "m1,2024-03-04T08:00:00Z,1,kW\nm2,2024-03-04T08:00:00Z,2,kW\n").encode()
    )
    landing.write(
        "two-days.csv",
        (
            header
            + "m1,2024-03-03T23:45:00Z,1,kW\nm1,2024-03-04T00:00:00Z,2,kW\nm2,2024-03-04T00:00:00Z,3,kW\n"
        ).encode(),
    )
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert report.rows_staged == 5 and report.affected_days == [date(2024, 3, 3), date(2024, 3, 4)]
    ledger = ingestion.load_ledger(lake_store).sort("key", "day")
    assert ledger.select("key", "day", "rows").rows() == [
        ("one-day.csv", date(2024, 3, 4), 2),
        ("two-days.csv", date(2024, 3, 3), 1),
        ("two-days.csv", date(2024, 3, 4), 2),
    ]
    staged = ingestion.load_day_rows(lake_store, ledger, date(2024, 3, 4))
    assert sorted(staged.select("source_file", "line_number").rows()) == [
        ("one-day.csv", 2),
        ("one-day.csv", 3),
        ("two-days.csv", 3),
        ("two-days.csv", 4),
    ]


def test_a_staged_write_that_fails_fails_the_ingestion_before_the_ledger_and_a_rerun_stages_all(
    tmp_path, monkeypatch
):
    # Staged chunks are written on threads of their own, chunks behind: a failure there still
    # fails the run before any ledger row names a file, and the next run stages every file.
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    for key, text in FILES.items():
        landing.write(key, text.encode())
    chunk = len(FILES["a.csv"])  # a chunk a file
    real = lake.write_staged
    calls = []

    def failing(store, key, parts):
        calls.append(key)
        if len(calls) == 2:
            raise OSError(errno.EIO, "disk went away")
        real(store, key, parts)

    monkeypatch.setattr(lake, "write_staged", failing)
    with pytest.raises(OSError, match="disk went away"):
        ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, chunk_bytes=chunk)
    assert list(lake_store.list(lake.LEDGER_FILES)) == []
    assert len(calls) >= 2
    monkeypatch.undo()
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW, chunk_bytes=chunk)
    clean = ingestion.ingest_new_files(
        LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "clean"), RulesConfig(), now=NOW
    )
    assert (report.files_staged, report.rows_staged) == (clean.files_staged, clean.rows_staged)
    ledger = ingestion.load_ledger(lake_store)
    for day in report.affected_days:
        assert_frame_equal(
            ingestion.load_day_rows(lake_store, ledger, day).sort("source_file", "line_number"),
            ingestion.load_day_rows(
                LocalBlobStore(tmp_path / "clean"),
                ingestion.load_ledger(LocalBlobStore(tmp_path / "clean")),
                day,
            ).sort("source_file", "line_number"),
        )


def test_a_chunk_of_one_day_mixing_a_large_file_and_small_files_counts_each_files_rows(tmp_path, monkeypatch):
    # The one-day path: the large file's rows are its frame's, the small files' are counted apart.
    landing, lake_store = LocalBlobStore(tmp_path / "landing"), LocalBlobStore(tmp_path / "lake")
    header = "meter_id,timestamp,energy_value,energy_unit\n"
    big = header + "".join(f"M{i},2024-03-04T{i % 24:02d}:00:00Z,1,kW\n" for i in range(300))
    landing.write("big.csv", big.encode())
    landing.write("s1.csv", (header + "m1,2024-03-04T08:00:00Z,1,kW\n").encode())
    landing.write(
        "s2.csv", (header + "m2,2024-03-04T08:00:00Z,1,kW\nm3,2024-03-04T09:00:00Z,2,kW\n").encode()
    )
    monkeypatch.setattr(ingestion, "SMALL_FILE_BYTES", len(big) - 1)  # big.csv is parsed alone
    report = ingestion.ingest_new_files(landing, lake_store, RulesConfig(), now=NOW)
    assert report.rows_staged == 303 and report.affected_days == [date(2024, 3, 4)]
    ledger = ingestion.load_ledger(lake_store).sort("key")
    assert ledger.select("key", "day", "rows").rows() == [
        ("big.csv", date(2024, 3, 4), 300),
        ("s1.csv", date(2024, 3, 4), 1),
        ("s2.csv", date(2024, 3, 4), 2),
    ]
    assert len(list(lake_store.list("staging/"))) == 1
    staged = ingestion.load_day_rows(lake_store, ledger, date(2024, 3, 4))
    assert staged.group_by("source_file").len().sort("source_file").rows() == [
        ("big.csv", 300),
        ("s1.csv", 1),
        ("s2.csv", 2),
    ]
