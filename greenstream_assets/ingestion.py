"""File-level ingestion: each new file version in the landing zone is read once, backed up untouched,
split by the UTC day of its readings into staging, and recorded in the ledger.

The ledger (not a sensor cursor) is the memory of what was processed, so a restarted daemon resumes
exactly. Day partitions then read only their own day's staged rows (see ../shared/DESIGN-NOTES.md,
option A).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import polars as pl

from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.files import (
    CANONICAL_HEADER,
    RejectedFile,
    check_bytes,
    check_text,
    read_meter_files,
    read_meter_text,
    simple_body,
)
from greenstream_assets.rules.timestamps import parse_timestamp, parse_timestamp_column, utc_day
from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import BlobStore, ObjectInfo, UnreadableObject, UnsafeKey, check_key

LEDGER_SCHEMA = {
    "batch": pl.String,
    "key": pl.String,
    "version": pl.String,  # the store's change marker (ETag, or size + mtime)
    "checksum": pl.String,  # sha256 of the bytes
    "size": pl.Int64,
    "status": pl.String,  # staged | failed
    "reason": pl.String,  # why a failed file failed
    "day": pl.Date,  # a day the file has rows for (null for a failed file)
    "rows": pl.Int64,  # rows of the file staged for that day
    "ingested_at": pl.Datetime("us", "UTC"),
    # The lake object holding a staged file's original bytes; null for a failed file, and in the
    # rows of ingestions from before it was recorded (see ``backup_objects``).
    "backup": pl.String,
}


@dataclass
class _Fetched:
    """One landing object as a worker thread left it."""

    obj: ObjectInfo
    size: int
    checksum: str | None  # None: the object could not be read
    # None: unchanged since the ledger's version; the failure; or the data lines (plain format) or
    # rows to stage.
    parsed: str | pl.DataFrame | Exception | None
    backup: str | None = None  # the lake object now holding a staged file's bytes
    data: bytes | None = None  # the bytes of a staged file that goes into its chunk's pack
    stamps: pl.Series | None = None  # the distinct timestamps of parsed rows (see ``_single_day``)


@dataclass
class IngestReport:
    batch: str | None = None
    files_staged: int = 0
    files_failed: int = 0
    files_unchanged: int = 0
    rows_staged: int = 0
    affected_days: list[date] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)


def new_batch_id(now: datetime) -> str:
    """Sortable by time of writing: the sensor reads batches in this order."""
    return (
        now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + hashlib.sha1(str(now.timestamp()).encode()).hexdigest()[:6]
    )


def load_ledger(store: BlobStore, objects: list[ObjectInfo] | None = None) -> pl.DataFrame:
    """The ledger: every batch's rows (``objects``: the listing of its files, when the caller has it)."""
    listed = store.list(lake.LEDGER_FILES) if objects is None else objects
    frames = [_ledger_columns(lake.read_parquet(store, obj.key)) for obj in listed]
    if not frames:
        return pl.DataFrame(schema=LEDGER_SCHEMA)
    return pl.concat(frames, how="vertical_relaxed").cast(LEDGER_SCHEMA)


def _ledger_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """A ledger file's rows in the ledger's columns: a file written before a column was added has
    it null."""
    if frame.columns == list(LEDGER_SCHEMA):
        return frame
    return frame.select(
        pl.col(name) if name in frame.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in LEDGER_SCHEMA.items()
    )


def current_versions(ledger: pl.DataFrame) -> pl.DataFrame:
    """The ledger rows of each key's latest content: the versions the days are built from.

    Where two batches staged the same content (two runs racing on one new file), the earliest
    batch wins, so a row is never counted twice.
    """
    if ledger.height == 0:
        return ledger
    latest = ledger.sort("ingested_at", "batch").group_by("key").agg(pl.col("checksum").last())
    first_batch = (
        ledger.join(latest, on=["key", "checksum"], how="semi").group_by("key").agg(pl.col("batch").min())
    )
    return ledger.join(first_batch, on=["key", "batch"], how="semi")


def day_files(ledger: pl.DataFrame, day: date) -> pl.DataFrame:
    """The current file versions with rows on ``day``: key, checksum, size, rows, batch, backup
    (as the ledger recorded it: see ``backup_objects``)."""
    current = current_versions(ledger)
    return (
        current.filter((pl.col("status") == "staged") & (pl.col("day") == day))
        .select("key", "checksum", "size", "rows", "batch", "backup")
        .sort("key")
    )


def files_digest(files: pl.DataFrame) -> str:
    """Identity of a day's input: changes when any of its files is added, removed or changed."""
    text = "\n".join(f"{k}\t{c}" for k, c in files.select("key", "checksum").sort("key").iter_rows())
    return hashlib.sha256(text.encode()).hexdigest()


def unseen_objects(landing: BlobStore, ledger: pl.DataFrame) -> list[ObjectInfo]:
    """Landing objects whose version is not their key's latest in the ledger: new keys, and keys
    changed since. Compared with the latest version, not with every version ever seen: a key put
    back to content it had before (an S3 ETag is the content's MD5) has changed again."""
    latest = dict(
        ledger.sort("ingested_at", "batch").group_by("key").agg(pl.col("version").last()).iter_rows()
    )
    return [obj for obj in landing.list() if latest.get(obj.key) != obj.version]


def _usable_day(ts: pl.Expr, config: RulesConfig, arrival: date) -> pl.Expr:
    """The UTC day of an instant where it is a day the rows can be staged for, else null."""
    day = utc_day(ts)
    return pl.when(day.is_between(pl.lit(config.earliest_day), pl.lit(arrival + timedelta(days=1)))).then(day)


def _single_day(timestamps: pl.Series, config: RulesConfig, arrival: date) -> date | None:
    """The day ``_assign_days`` gives every row when it gives them all the same one from their own
    timestamps (a chunk of one day's files, the usual case), else None: worked out from the
    distinct texts alone (a few hundred in a day's 4.8M rows), with no join back to the rows."""
    distinct = pl.DataFrame({"text": timestamps.unique()})
    days = distinct.select(_usable_day(parse_timestamp("text", config.timezone), config, arrival)).to_series()
    if days.len() == 0 or days.null_count() or days.n_unique() != 1:
        return None
    return days[0]


def _assign_days(rows: pl.DataFrame, config: RulesConfig, arrival: date) -> pl.DataFrame:
    """Add ``day``: the UTC day of each reading. Rows with no usable day go to their file's first
    day (or the arrival day) so that they are quarantined and reviewed with the file's other rows.
    """
    ts = parse_timestamp_column(rows.get_column("timestamp"), config.timezone)
    rows = rows.with_columns(day=_usable_day(pl.lit(ts), config, arrival))
    if rows.get_column("day").null_count() == 0:  # the usual case: no window over the files
        return rows
    return rows.with_columns(
        pl.col("day").fill_null(pl.col("day").min().over("source_file")).fill_null(arrival)
    )


# Files are parsed and staged in chunks of about this many bytes, so memory stays flat however
# many files landed (a backfill of weeks is many chunks, not one frame).
CHUNK_BYTES = 32 * 1024 * 1024
# Files up to this size in the meters' plain format are parsed a chunk at a time, not one by one:
# for a per-meter file of a few kilobytes the call costs more than the parsing. Larger files are
# parsed alone, where one call per file costs nothing.
SMALL_FILE_BYTES = 256 * 1024
# Ingestions before per-file backups kept the files up to this size in one zip per staging chunk
# (``lake.raw_pack_key``), without recording it in the ledger.
LEGACY_PACKED_BYTES = 256 * 1024
# Every file is backed up alone, byte for byte, under raw/files/, but for an ingestion of at least
# this many small files (a day of 50,000 per-meter files): those go up a chunk at a time, each
# chunk's files as the untouched members of one uncompressed zip under raw/packs/, recorded per
# file in the ledger. An object each cost ~0.5-1 ms of kernel time to create on a folder here
# (50,000 of them: +15-35 s for the day) and a PUT each on S3 (50,000 PUTs).
PACK_MIN_FILES = 1_000


def backup_objects(files: pl.DataFrame) -> pl.Series:
    """The object holding each staged file's backup (``key``, ``checksum``, ``size``, ``batch``
    and, when the ledger has it, ``backup`` columns, as ``day_files`` gives them): the one the
    ledger recorded, its own object under raw/files/; for a file staged before the ledger
    recorded it, its chunk's pack when it was small enough to be packed."""
    recorded = files.get_column("backup") if "backup" in files.columns else [None] * files.height
    rows = files.select("key", "checksum", "size", "batch").iter_rows()
    return pl.Series(
        "backup",
        [
            backup
            or (
                lake.raw_pack_key(batch)
                if size <= LEGACY_PACKED_BYTES
                else lake.legacy_raw_backup_key(checksum, key)
            )
            for backup, (key, checksum, size, batch) in zip(recorded, rows, strict=True)
        ],
        dtype=pl.String,
    )


def ingest_new_files(
    landing: BlobStore,
    lake_store: BlobStore,
    config: RulesConfig,
    now: datetime | None = None,
    max_workers: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> IngestReport:
    """Stage every landing-zone object whose version the ledger has not seen. Idempotent.

    Objects are fetched and backed up concurrently (a day can be 50,000 small per-meter files), on
    as many threads as the busier of the two stores keeps busy (``io_workers``: 4 for a folder, 16
    for S3); each file is parsed on its own (a broken one fails alone) and the day split runs once
    per chunk, vectorized. An object deleted since the listing is left to the next one; one that
    cannot be read (archived, access denied) is recorded as failed, with a note in failed/; an
    error a retry may mend (throttling, 5xx) fails the run, for the step's RetryPolicy.
    """
    now = now or datetime.now(UTC)
    ledger_files = list(lake_store.list(lake.LEDGER_FILES))
    ledger = load_ledger(lake_store, ledger_files)
    complete_batch_notes(lake_store, ledger, now, ledger_files)
    todo = unseen_objects(landing, ledger)
    report = IngestReport()
    if not todo:
        return report
    report.batch = batch = new_batch_id(now)
    previous = current_versions(ledger)
    known = dict(previous.select("key", "checksum").unique().iter_rows())
    pack_small = sum(obj.size <= SMALL_FILE_BYTES for obj in todo) >= PACK_MIN_FILES

    def fetch(obj: ObjectInfo) -> _Fetched | None:
        """All of one file's I/O, run on a worker thread: read, back up alone or set aside, parse.
        A file in the meters' own plain format comes back as its data lines (``simple_body``),
        parsed later with the rest of its chunk in one go; any other as its parsed rows. None:
        the object is gone since it was listed (the next listing decides about its key)."""
        try:
            data = landing.read(obj.key)
        except FileNotFoundError:
            return None
        except UnreadableObject as err:
            _note_unreadable(lake_store, obj, err, now)
            return _Fetched(obj, obj.size, None, err)
        checksum = hashlib.sha256(data).hexdigest()
        if known.get(obj.key) == checksum:
            return _Fetched(obj, len(data), checksum, None)
        try:
            check_key(obj.key)
            parsed: str | pl.DataFrame | Exception
            if len(data) <= SMALL_FILE_BYTES:
                text = check_text(data)
                parsed = simple_body(text) or read_meter_text(text, obj.key)
            else:
                # A large file goes to the parser as bytes: no decode and re-encode of megabytes.
                parsed = read_meter_text(check_bytes(data), obj.key)
        except (RejectedFile, UnsafeKey) as err:
            parsed = err
        if isinstance(parsed, Exception):
            _fail_file(lake_store, obj.key, data, checksum, _failure_reason(obj, parsed), str(parsed), now)
            return _Fetched(obj, len(data), checksum, parsed)
        # Parsed rows' distinct timestamps, here on this worker thread (a day's file holds a few
        # hundred among 200,000 rows): the chunk's day is then found from those alone.
        stamps = parsed.get_column("timestamp").unique() if isinstance(parsed, pl.DataFrame) else None
        if pack_small and len(data) <= SMALL_FILE_BYTES:
            # Into its chunk's pack.
            return _Fetched(obj, len(data), checksum, parsed, data=data, stamps=stamps)
        backup = lake.raw_backup_key(checksum, obj.key)
        # A small file is made durable with the others at once, before the ledger names it
        # (``lake_store.sync``: an fsync each would wait for a journal commit each); a large one
        # here, on this worker thread, while the other threads parse (a sync of the day's 190 MB
        # at the end would wait for all of it after the parsing).
        lake_store.write(backup, data, durable=len(data) > SMALL_FILE_BYTES, cached=False)
        return _Fetched(obj, len(data), checksum, parsed, backup, stamps=stamps)

    ledger_rows: list[dict] = []
    unchanged: list[pl.DataFrame] = []
    days: set[date] = set()
    touched_keys: set[str] = set()
    chunks = _chunks(todo, chunk_bytes)
    packs: list[Future] = []
    workers = max_workers or max(landing.io_workers, lake_store.io_workers)
    # A chunk's staged files are encoded and written on threads of their own while the next chunk
    # is split (two chunks behind at most): encoding them on this thread kept the fetching threads
    # waiting, and one thread of its own could not keep up with them.
    staging: deque[Future] = deque()
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        ThreadPoolExecutor(max_workers=STAGING_WRITERS, thread_name_prefix="staging") as writers,
    ):
        # The next chunk's files are fetched and parsed while this one is split and the two before
        # it are staged: four chunks in memory at most, so memory stays bounded and the cores busy.
        ahead = [pool.submit(fetch, obj) for obj in chunks[0]]
        for number in range(len(chunks)):
            fetched = ahead
            ahead = (
                [pool.submit(fetch, obj) for obj in chunks[number + 1]] if number + 1 < len(chunks) else []
            )
            part = f"{batch}-{number:04d}"
            frames: list[pl.DataFrame] = []
            stamps: list[pl.Series] = []
            simple: list[tuple[str, str]] = []
            bases: dict[str, dict] = {}
            to_pack: list[tuple[str, str, bytes]] = []
            for future in fetched:
                fetched_file = future.result()
                if fetched_file is None:
                    # Deleted since the listing: nothing recorded, its earlier rows (if any) stay.
                    continue
                obj, checksum, parsed = fetched_file.obj, fetched_file.checksum, fetched_file.parsed
                base = {
                    "batch": part,
                    "key": obj.key,
                    "version": obj.version,
                    "checksum": checksum,
                    "size": fetched_file.size,
                    "ingested_at": now,
                    "backup": fetched_file.backup,
                }
                if parsed is None:
                    # Touched but not changed: remember the new version, reprocess nothing (the
                    # rows stay where they were staged).
                    report.files_unchanged += 1
                    unchanged.append(
                        previous.filter(pl.col("key") == obj.key).with_columns(
                            version=pl.lit(obj.version), ingested_at=pl.lit(now, LEDGER_SCHEMA["ingested_at"])
                        )
                    )
                    continue
                touched_keys.add(obj.key)
                if isinstance(parsed, Exception):
                    reason = _failure_reason(obj, parsed)
                    report.files_failed += 1
                    report.failures.append({"key": obj.key, "reason": reason, "detail": str(parsed)})
                    ledger_rows.append({**base, "status": "failed", "reason": reason, "day": None, "rows": 0})
                    continue
                if isinstance(parsed, str):
                    simple.append((parsed, obj.key))
                else:
                    frames.append(parsed)
                    assert fetched_file.stamps is not None
                    stamps.append(fetched_file.stamps)
                if fetched_file.data is not None:
                    assert checksum is not None
                    base["backup"] = lake.raw_pack_key(part)
                    to_pack.append((checksum, obj.key, fetched_file.data))
                bases[obj.key] = base
                report.files_staged += 1
            del fetched
            if to_pack:
                # Written while the chunk is split and staged; waited for before the ledger.
                packs.append(pool.submit(lake.write_raw_pack, lake_store, part, to_pack, now))
            del to_pack
            simple_frames = _read_simple(simple)
            if not frames and not simple_frames:
                continue
            parts = [*frames, *simple_frames]
            report.rows_staged += sum(part.height for part in parts)
            stamps += [frame.get_column("timestamp").unique() for frame in simple_frames]
            one_day = _single_day(pl.concat(stamps), config, now.date())
            del stamps
            by_day: dict[tuple[date], list[pl.DataFrame]]
            if one_day is not None:
                # The usual chunk: every row on one day. A large file's frame is that file's rows;
                # only the small files parsed together are counted per file.
                counts = [(frame.get_column("source_file")[0], one_day, frame.height) for frame in frames]
                if simple_frames:
                    together = pl.concat(simple_frames).group_by("source_file").len()
                    counts += [(key, one_day, n) for key, n in together.iter_rows()]
                by_day = {(one_day,): parts}
            else:
                rows = _assign_days(pl.concat(parts), config, now.date())
                counts = rows.group_by("source_file", "day").len().iter_rows()
                chunk_days = rows.get_column("day").unique()
                if chunk_days.len() == 1:  # rows without a usable day of their own, gone to it
                    by_day = {(chunk_days.item(),): [rows.drop("day")]}
                else:
                    by_day = {
                        key: [part]
                        for key, part in rows.partition_by("day", as_dict=True, include_key=False).items()
                    }
                del rows
            del parts, frames, simple_frames
            for key, day, n in counts:
                ledger_rows.append({**bases[key], "status": "staged", "reason": None, "day": day, "rows": n})
            staging.append(writers.submit(_write_staged, lake_store, part, by_day))
            while len(staging) > STAGING_WRITERS:
                staging.popleft().result()
            days.update(day for (day,) in by_day)
            del by_day
        for written in (*staging, *packs):
            written.result()

    # A changed file also changes the days its previous content had rows on.
    days |= set(
        previous.filter(pl.col("key").is_in(touched_keys) & pl.col("day").is_not_null())
        .get_column("day")
        .to_list()
    )
    report.affected_days = sorted(days)
    if not ledger_rows and not unchanged:  # every object deleted since the listing
        report.batch = None
        return report
    # The backups are durable before the ledger says the files are staged; then the ledger rows,
    # and the batch note last: the note is what tells the sensor to look.
    lake_store.sync()
    lake.write_parquet(
        lake_store,
        f"{lake.LEDGER_FILES}{batch}.parquet",
        pl.concat([pl.DataFrame(ledger_rows, schema=LEDGER_SCHEMA), *unchanged]),
    )
    lake.write_json(
        lake_store,
        f"{lake.LEDGER_BATCHES}{batch}.json",
        {
            "batch": batch,
            "days": [d.isoformat() for d in report.affected_days],
            "files_staged": report.files_staged,
            "files_failed": report.files_failed,
        },
    )
    return report


# Threads that encode and write staged chunks, and chunks waiting for them at most.
STAGING_WRITERS = 2


def _write_staged(lake_store: BlobStore, part: str, by_day: dict[tuple[date], list[pl.DataFrame]]) -> None:
    for (day,), day_parts in by_day.items():
        lake.write_staged(lake_store, lake.staging_key(day, part), day_parts)


def _batch_name(key: str, prefix: str, suffix: str) -> str:
    return key.removeprefix(prefix).removesuffix(suffix)


def complete_batch_notes(
    lake_store: BlobStore, ledger: pl.DataFrame, now: datetime, ledger_files: list[ObjectInfo]
) -> list[str]:
    """Write the missing note of every batch whose ledger rows were written without one (an
    ingestion that failed between the two writes: its files are seen, so no later run stages them
    again, and without a note the sensor never learns of their days). The days are those of every
    version of the batch's keys: a day the sensor looks at needlessly is found current and left.

    The note goes under the batch's own name, and once more under a new name: the sensor reads
    notes newer than its cursor, and the batch's own may be older. ``ledger_files``: the listing
    ``ledger`` was read from. Returns the batches completed."""
    written = {_batch_name(obj.key, lake.LEDGER_FILES, ".parquet") for obj in ledger_files}
    noted = {
        _batch_name(obj.key, lake.LEDGER_BATCHES, ".json") for obj in lake_store.list(lake.LEDGER_BATCHES)
    }
    missing = sorted(written - noted)
    all_days: set[date] = set()
    for batch in missing:
        rows = lake.read_parquet(lake_store, f"{lake.LEDGER_FILES}{batch}.parquet")
        keys = rows.get_column("key").unique().implode()
        days = sorted(
            ledger.filter(pl.col("key").is_in(keys) & pl.col("day").is_not_null()).get_column("day").unique()
        )
        own = rows.filter(pl.col("batch").str.starts_with(batch))
        count = {
            status: own.filter(pl.col("status") == status).get_column("key").n_unique()
            for status in ("staged", "failed")
        }
        note = {
            "batch": batch,
            "days": [d.isoformat() for d in days],
            "files_staged": count["staged"],
            "files_failed": count["failed"],
        }
        lake.write_json(lake_store, f"{lake.LEDGER_BATCHES}{batch}.json", note)
        all_days |= set(days)
    if missing:
        fresh = new_batch_id(now)
        lake.write_json(
            lake_store,
            f"{lake.LEDGER_BATCHES}{fresh}.json",
            {
                "batch": fresh,
                "days": [d.isoformat() for d in sorted(all_days)],
                "files_staged": 0,
                "files_failed": 0,
                "completes": missing,
            },
        )
    return missing


def _read_simple(simple: list[tuple[str, str]]) -> list[pl.DataFrame]:
    """The plain files of a chunk parsed together (or one by one, should their lines not come out
    one row each)."""
    if not simple:
        return []
    together = read_meter_files(simple)
    if together is not None:
        return [together]
    return [read_meter_text(f"{CANONICAL_HEADER}\n{body}", key) for body, key in simple]


def _chunks(objects: list[ObjectInfo], chunk_bytes: int) -> list[list[ObjectInfo]]:
    chunks: list[list[ObjectInfo]] = [[]]
    size = 0
    for obj in objects:
        if chunks[-1] and size + obj.size > chunk_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(obj)
        size += obj.size
    return chunks


def _failure_reason(obj: ObjectInfo, err: Exception) -> str:
    if isinstance(err, (RejectedFile, UnreadableObject)):
        return err.reason
    if obj.key.endswith("/") and obj.size == 0:
        return "folder_placeholder"
    return "unsafe_key"


def _fail_file(
    store: BlobStore, key: str, data: bytes, checksum: str, reason: str, detail: str, now: datetime
) -> None:
    """Keep an unreadable file for review, beside a note saying why."""
    store.write(lake.failed_key(checksum, _lake_safe(key)), data, cached=False)
    lake.write_json(
        store,
        lake.failed_note_key(checksum, _lake_safe(key)),
        {
            "source_key": key,
            "reason": reason,
            "detail": detail,
            "checksum": checksum,
            "size": len(data),
            "failed_at": now.isoformat(),
        },
    )


def _note_unreadable(store: BlobStore, obj: ObjectInfo, err: UnreadableObject, now: datetime) -> None:
    """A note in failed/ for an object that is there but cannot be read (no copy: its bytes could
    not be had). Filed under a digest of its version, as a readable file is under its checksum."""
    lake.write_json(
        store,
        lake.failed_note_key(hashlib.sha256(obj.version.encode()).hexdigest(), _lake_safe(obj.key)),
        {
            "source_key": obj.key,
            "reason": err.reason,
            "detail": err.detail,
            "checksum": None,
            "version": obj.version,
            "size": obj.size,
            "failed_at": now.isoformat(),
        },
    )


def _lake_safe(key: str) -> str:
    """A landing key as the tail of a lake key; an unsafe one by a digest of it."""
    try:
        return check_key(key)
    except UnsafeKey:
        return "unsafe-key-" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def whole_batches(ledger: pl.DataFrame, day: date, files: pl.DataFrame) -> list[str]:
    """Of the batches ``files`` (``day_files``) come from, those whose staged rows for ``day`` are
    all of these files' versions: read without a join. A batch some of whose files changed since
    (or were staged first by another batch) holds rows that are no longer current."""
    staged = (
        ledger.filter((pl.col("status") == "staged") & (pl.col("day") == day))
        .select("batch", "key", "checksum")
        .unique()
        .group_by("batch")
        .len("staged")
    )
    # Distinct keys: a file re-sent unchanged is listed again under the batch that staged it.
    wanted = files.group_by("batch").agg(wanted=pl.col("key").n_unique())
    whole = wanted.join(staged, on="batch").filter(pl.col("wanted").cast(pl.UInt32) == pl.col("staged"))
    return sorted(whole.get_column("batch").to_list())


def day_row_slices(
    lake_store: BlobStore, ledger: pl.DataFrame, day: date, slice_rows: int
) -> AbstractContextManager[Iterator[pl.DataFrame]]:
    """The day's staged raw rows from the current version of every file, each row once, a slice
    of meters at a time (see ``staged_row_slices``)."""
    files = day_files(ledger, day)
    return staged_row_slices(lake_store, day, files, whole_batches(ledger, day, files), slice_rows)


def manifest_files(manifest: dict) -> pl.DataFrame:
    """The files a raw manifest (``lake.raw_manifest_key``) lists: key, checksum, size, rows, batch."""
    rows = manifest["files"]
    return pl.DataFrame(
        {
            "key": [f["key"] for f in rows],
            "checksum": [f["checksum"] for f in rows],
            "size": [f["size"] for f in rows],
            "rows": [f["rows"] for f in rows],
            "batch": [f["batch"] for f in rows],
        },
        schema={
            "key": pl.String,
            "checksum": pl.String,
            "size": pl.Int64,
            "rows": pl.Int64,
            "batch": pl.String,
        },
    )


def manifest_row_slices(
    lake_store: BlobStore, manifest: dict, slice_rows: int
) -> AbstractContextManager[Iterator[pl.DataFrame]]:
    """The raw rows a day's manifest records, as ``day_row_slices`` gave them when it was written
    (staged files are never rewritten). A manifest from before ``whole_batches`` were recorded
    has every batch read through the join."""
    day = date.fromisoformat(manifest["day"])
    whole = manifest.get("whole_batches", [])
    return staged_row_slices(lake_store, day, manifest_files(manifest), whole, slice_rows)


@contextmanager
def staged_row_slices(
    lake_store: BlobStore, day: date, files: pl.DataFrame, whole: list[str], slice_rows: int
) -> Iterator[Iterator[pl.DataFrame]]:
    """``files``' (key, batch, rows) staged rows for ``day``, each row once, a slice of meters at
    a time (see ``lake.meter_slice``): only one slice is ever in memory. Within a slice, rows keep
    their staged order (batch by batch, file line by line). The batches in ``whole`` hold only
    rows of these files."""
    batches = files.get_column("batch").unique().sort().to_list()
    with lake.local_copies(lake_store, [lake.staging_key(day, batch) for batch in batches]) as paths:
        plans = []
        for batch, path in zip(batches, paths, strict=True):
            scan = pl.scan_parquet(path)
            if batch not in whole:
                # Only the rows of the files whose current version the batch holds (a batch stages
                # one version of a key). Otherwise every row is current, with no join.
                wanted = files.filter(pl.col("batch") == batch).select("key")
                scan = scan.join(
                    wanted.lazy(), left_on="source_file", right_on="key", how="semi", maintain_order="left"
                )
            plans.append(scan)
        # The files' row counts bound the day's (a file may also hold rows of other days).
        slices = lake.slice_count(int(files.get_column("rows").sum()), slice_rows)

        def generate() -> Iterator[pl.DataFrame]:
            if not plans:
                yield pl.DataFrame(schema=RAW_STAGED_SCHEMA)
                return
            rows = pl.concat(plans)
            for k in range(slices):
                yield rows.filter(lake.meter_slice(slices) == k).select(*RAW_STAGED_SCHEMA).collect()

        yield lake.prefetched(generate())


def load_day_rows(lake_store: BlobStore, ledger: pl.DataFrame, day: date) -> pl.DataFrame:
    """The day's staged raw rows in one frame (small days, tests)."""
    with day_row_slices(lake_store, ledger, day, slice_rows=1 << 62) as slices:
        return pl.concat(list(slices))


RAW_STAGED_SCHEMA = {
    "meter_id": pl.String,
    "timestamp": pl.String,
    "energy_value": pl.String,
    "energy_unit": pl.String,
    "source_file": pl.String,
    "line_number": pl.Int64,
}


def newest_batch_per_day(ledger: pl.DataFrame) -> dict[date, str]:
    """Per day, the newest ledger batch (chunk) that staged rows for it, current or since replaced."""
    staged = ledger.filter(pl.col("day").is_not_null())
    return dict(staged.group_by("day").agg(pl.col("batch").max()).iter_rows())


def stale_days(lake_store: BlobStore, ledger: pl.DataFrame, days: set[date] | None = None) -> dict[date, str]:
    """Days (all in the ledger, or only ``days``) whose current files are not what the day's last
    complete run was built from (a failed run leaves its day stale), mapped to their files' digest."""
    staged = ledger.filter(pl.col("day").is_not_null())
    candidates = set(staged.get_column("day").unique().to_list()) if days is None else days
    stale = {}
    for day in sorted(candidates):
        digest = files_digest(day_files(ledger, day))
        if lake.day_done_digests(lake_store, day) != {digest}:
            stale[day] = digest
    return stale


def batches_after(lake_store: BlobStore, cursor: dict, window_seconds: int = 600) -> tuple[list[str], dict]:
    """Ledger batches not yet seen, and the next cursor.

    Batch names sort by the time they were written, but two runs can finish out of order, so the
    cursor remembers the names inside a short window behind the newest one instead of a single
    watermark: small, bounded, and nothing is skipped.
    """
    names = sorted(
        obj.key.rsplit("/", 1)[-1].removesuffix(".json") for obj in lake_store.list(lake.LEDGER_BATCHES)
    )
    recent = set(cursor.get("recent", []))
    floor = _shift_batch(cursor.get("last", ""), -window_seconds)
    fresh = [name for name in names if name > floor and name not in recent]
    last = max([cursor.get("last", ""), *fresh])
    keep_floor = _shift_batch(last, -window_seconds)
    return fresh, {"last": last, "recent": [n for n in names if n > keep_floor]}


def _shift_batch(name: str, seconds: int) -> str:
    if not name:
        return ""
    moment = datetime.strptime(name[:21], "%Y%m%dT%H%M%S%f")
    return (moment + timedelta(seconds=seconds)).strftime("%Y%m%dT%H%M%S%f")
