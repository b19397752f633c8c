"""The lake's layout and its file formats: every path the platform writes is named here."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import polars as pl

from greenstream_assets.storage.blobs import BlobStore, LocalBlobStore

T = TypeVar("T")
U = TypeVar("U")
# Footer key of the files SliceWriter writes: row group k holds the meters of slice k.
METER_SLICES = "greenstream.meter_slices"

LEDGER_FILES = "_ledger/files/"
LEDGER_BATCHES = "_ledger/batches/"


# The longest name of one file or folder on common file systems (NAME_MAX, in bytes): a lake key
# made from a landing key keeps every segment within it, so a lake in a folder can hold it
# whatever the landing zone (S3 allows a 1,024-byte key in one segment).
NAME_MAX = 255
FAILED_NOTE_SUFFIX = ".reason.json"


def lake_name(name: str, limit: int = NAME_MAX) -> str:
    """``name`` as one segment of a lake key: itself when its UTF-8 form fits ``limit`` bytes and
    it is not hidden (a leading ``.``: a folder store never lists it); otherwise the longest start
    of it that fits (leading dots dropped), ``~``, 16 hex digits of its SHA-256 and its extension.
    Deterministic, so a retry writes the same key; distinct names give distinct keys."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit and not name.startswith("."):
        return name
    stem, _, extension = name.rpartition(".")
    if stem.lstrip(".") and 0 < len(extension.encode("utf-8", "surrogateescape")) < 16:
        extension = "." + extension
    else:
        stem, extension = name, ""
    tail = "~" + hashlib.sha256(encoded).hexdigest()[:16] + extension
    room = limit - len(tail.encode("utf-8", "surrogateescape"))
    start, used = [], 0
    for char in stem.lstrip("."):
        size = len(char.encode("utf-8", "surrogateescape"))
        if used + size > room:
            break
        start.append(char)
        used += size
    return "".join(start) + tail


def _lake_path(folder: str, last: str, limit: int = NAME_MAX) -> str:
    """A landing key's folder and a name, each segment made a lake name (``lake_name``)."""
    segments = [lake_name(part) for part in folder.split("/")] if folder else []
    return "/".join([*segments, lake_name(last, limit)])


def raw_backup_key(checksum: str, source_key: str) -> str:
    """The landing key's own folders, each version's name prefixed by its checksum: versions of a
    file sit side by side, and backing up a day of 50,000 per-meter files creates no folder per
    file (a folder per file serialized the backups on the parent folder's lock). Segments too
    long for a file system are shortened (``lake_name``)."""
    folder, _, name = source_key.rpartition("/")
    return "raw/files/" + _lake_path(folder, f"{checksum[:16]}-{name}")


def legacy_raw_backup_key(checksum: str, source_key: str) -> str:
    """``raw_backup_key`` as ingestions wrote it before segments were shortened (a long name
    reached an S3 lake as it was; a folder lake could not write it at all)."""
    folder, _, name = source_key.rpartition("/")
    return f"raw/files/{folder + '/' if folder else ''}{checksum[:16]}-{name}"


def raw_pack_key(batch: str) -> str:
    """One staging chunk's small files in one uncompressed zip (``write_raw_pack``): what an
    ingestion of thousands of them writes, and what ingestions before per-file backups wrote for
    every file of up to 256 KiB."""
    return f"raw/packs/{batch}.zip"


def write_raw_pack(store: BlobStore, batch: str, files: list[tuple[str, str, bytes]], when: datetime) -> None:
    """Back up ``(checksum, source key, bytes)`` of small files as one uncompressed zip, each member
    the file's bytes untouched, named as ``legacy_raw_backup_key`` names it under ``raw/files/``.
    An ingestion of thousands of per-meter files (see ``ingestion.PACK_MIN_FILES``) writes a few
    packs, not 50,000 objects (50,000 PUTs on S3). Written by temporary file and rename, or one
    PUT, like any object."""
    store.write(
        raw_pack_key(batch),
        zip_stored(((_pack_member(c, k), data) for c, k, data in files), when),
        cached=False,
    )


def _pack_member(checksum: str, source_key: str) -> str:
    return legacy_raw_backup_key(checksum, source_key).removeprefix("raw/files/")


# The records of a zip archive (APPNOTE.TXT 4.3), as Python's zipfile packs them.
_ZIP_LOCAL = struct.Struct("<4s2B4HL2L2H")
_ZIP_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_ZIP_END = struct.Struct("<4s4H2LH")
_ZIP_END64 = struct.Struct("<4sQ2H2L4Q")
_ZIP_END64_LOCATOR = struct.Struct("<4sLQL")


def zip_stored(members: Iterable[tuple[str, bytes]], when: datetime) -> bytes:
    """``(name, bytes)`` members as an uncompressed zip, byte for byte what ``zipfile.ZipFile``
    (``ZIP_STORED``, ``allowZip64``) writes for them with ``when`` as every member's time and
    ``rw-r--r--`` permissions (tested against it). zipfile spends ~35 us of Python a member, with
    the GIL held, on objects, a header written twice and seeks: 1.75 s for a day of 50,000
    per-meter files, beside their ingestion's own work; this packs the same records directly. A
    pack holds one staging chunk of small files, so it stays under zip's 2 GB offsets (larger is
    refused); more than 65,535 members get the zip64 end records, as zipfile writes them."""
    stamp = max(when, datetime(1980, 1, 1, tzinfo=when.tzinfo)).timetuple()[:6]
    dosdate = (stamp[0] - 1980) << 9 | stamp[1] << 5 | stamp[2]
    dostime = stamp[3] << 11 | stamp[4] << 5 | (stamp[5] // 2)
    version, unix, permissions = 20, 3, 0o644 << 16
    parts: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for name, data in members:
        try:
            encoded, flags = name.encode("ascii"), 0
        except UnicodeEncodeError:
            encoded, flags = name.encode("utf-8"), 0x800
        crc, size = zlib.crc32(data), len(data)
        header = _ZIP_LOCAL.pack(
            b"PK\x03\x04", version, 0, flags, 0, dostime, dosdate, crc, size, size, len(encoded), 0
        )
        central.append(
            _ZIP_CENTRAL.pack(
                b"PK\x01\x02",
                version,
                unix,
                version,
                0,
                flags,
                0,
                dostime,
                dosdate,
                crc,
                size,
                size,
                len(encoded),
                0,
                0,
                0,
                0,
                permissions,
                offset,
            )
            + encoded
        )
        parts += (header, encoded, data)
        offset += len(header) + len(encoded) + size
    directory = b"".join(central)
    if offset + len(directory) > zipfile.ZIP64_LIMIT:
        raise ValueError(f"a pack of {offset + len(directory):,} bytes: packs hold one chunk of small files")
    count = len(central)
    if count > zipfile.ZIP_FILECOUNT_LIMIT:
        end = offset + len(directory)
        parts += (
            directory,
            _ZIP_END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(directory), offset),
            _ZIP_END64_LOCATOR.pack(b"PK\x06\x07", 0, end, 1),
        )
        count = 0xFFFF
    else:
        parts.append(directory)
    parts.append(_ZIP_END.pack(b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0))
    return b"".join(parts)


def read_raw_backup(
    store: BlobStore, checksum: str, source_key: str, batch: str, backup: str | None = None
) -> bytes:
    """The backed-up bytes of the file version ``checksum`` of ``source_key``, staged in ledger
    batch ``batch``. ``backup``: the object holding them, as a manifest or
    ``ingestion.backup_objects`` names it; without it, the version's own object, else its member
    in the batch's pack (an ingestion from before per-file backups)."""
    if backup is None:
        backup = raw_backup_key(checksum, source_key)
        if not store.exists(backup):
            backup = raw_pack_key(batch)
    if not backup.startswith("raw/packs/"):
        return store.read(backup)
    # The zip is read where it lies, by ranges (its end record, its central directory, the
    # member): on S3 a few ranged GETs, not the whole pack.
    with (
        io.BufferedReader(RangedObject(store, backup), buffer_size=_RANGE_BUFFER) as handle,
        zipfile.ZipFile(handle) as pack,
    ):
        return pack.read(_pack_member(checksum, source_key))


# Reads through RangedObject come in pieces of at least this size (zipfile reads a few bytes at a
# time around a member's header).
_RANGE_BUFFER = 256 * 1024


class RangedObject(io.RawIOBase):
    """A lake object as a read-only, seekable file whose reads are ``BlobStore.read_range`` calls
    (wrap it in ``io.BufferedReader``)."""

    def __init__(self, store: BlobStore, key: str) -> None:
        super().__init__()
        self.store, self.key = store, key
        self.length = store.size(key)
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position in {self.key}")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), self.length - self.position)
        if size <= 0:
            return 0
        data = self.store.read_range(self.key, self.position, size)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


def raw_manifest_key(day: date) -> str:
    return f"raw/manifests/date={day.isoformat()}.json"


# The last steps of a day write these when they succeed: a day is done when every one of them
# carries the digest of the day's current files. Every other step of the day is upstream of one of
# them (VEE and the reports of daily_quality, the table and archive of faulty_meter_incidents),
# and a step whose upstream failed is skipped, so a run that fails anywhere leaves its day stale.
DAY_DONE_STEPS = ("daily_peaks", "faulty_meters", "faulty_meter_incidents", "daily_quality")
# What marked a day done before the four: a day finished then is done if these two carry its
# digest. Their markers say which steps they were written with; the older ones say nothing.
LEGACY_DAY_DONE_STEPS = ("daily_peaks", "faulty_meters")


# Carry-forwards of the faulty-meter incidents under way: one marker per day a chain starts from.
INCIDENTS_CARRY = "_state/incidents_carry/"


def incidents_carry_key(day: date) -> str:
    return f"{INCIDENTS_CARRY}{day.isoformat()}.json"


def day_done_key(day: date, step: str) -> str:
    return f"_state/days/date={day.isoformat()}/{step}.json"


def mark_day_done(store: BlobStore, day: date, step: str) -> None:
    """Record that ``step`` finished ``day`` from the files in the day's raw manifest."""
    digest = read_json(store, raw_manifest_key(day))["files_digest"]
    write_json(
        store, day_done_key(day, step), {"files_digest": digest, "day_done_steps": list(DAY_DONE_STEPS)}
    )


def day_done_digests(store: BlobStore, day: date) -> set[str | None]:
    """The files' digests the day's last steps recorded (None for a step that has not finished the
    day): one digest, the current files', when the day is done."""
    markers = {}
    for step in DAY_DONE_STEPS:
        key = day_done_key(day, step)
        markers[step] = read_json(store, key) if store.exists(key) else None
    legacy = [markers[step] for step in LEGACY_DAY_DONE_STEPS]
    if all(m is not None and "day_done_steps" not in m for m in legacy):
        # Finished before the day needed four markers, and not run since.
        return {m["files_digest"] for m in legacy}  # type: ignore[index]
    return {m["files_digest"] if m is not None else None for m in markers.values()}


def staging_key(day: date, batch: str) -> str:
    return f"staging/date={day.isoformat()}/{batch}.parquet"


# The day's hand-over layers between steps (the raw rows are the staged files themselves, see
# ingestion.staged_row_slices), each read back whole, a slice at a time, by the next
# steps only: Arrow IPC files (lz4), one record batch per slice. Writing a slice as Arrow costs a
# third of encoding it as Parquet and reading it back a quarter to a half (no encoding, only
# compression), for about twice the bytes. What people and other engines read stays Parquet.
HANDOVER_LAYERS = frozenset({"cleansed_readings", "flagged_anomalies"})
ARROW_SUFFIX = ".arrow"
_ARROW_MAGIC = b"ARROW1"


def layer_key(layer: str, day: date) -> str:
    suffix = ARROW_SUFFIX if layer in HANDOVER_LAYERS else ".parquet"
    return f"layers/{layer}/date={day.isoformat()}{suffix}"


def is_arrow(path: Path) -> bool:
    """Whether a local file is an Arrow IPC file (else Parquet): by its leading magic bytes."""
    with open(path, "rb") as file:
        return file.read(len(_ARROW_MAGIC)) == _ARROW_MAGIC


def handover_key(store: BlobStore, key: str) -> str:
    """``key`` of a hand-over layer, or the Parquet object of the same name a lake written before
    the layers were Arrow holds instead: a step re-run alone on such a day reads its input there."""
    if key.endswith(ARROW_SUFFIX) and not store.exists(key):
        legacy = key.removesuffix(ARROW_SUFFIX) + ".parquet"
        if store.exists(legacy):
            return legacy
    return key


def scan_layer(path: Path) -> pl.LazyFrame:
    """A lazy scan of a local layer file, Arrow or Parquet."""
    if is_arrow(path):
        return pl.scan_ipc(path)
    return pl.scan_parquet(path, hive_partitioning=False)


def read_layer(store: BlobStore, key: str) -> pl.DataFrame:
    """A whole layer object, Arrow or Parquet (small days, tests, tools)."""
    with local_copy(store, handover_key(store, key)) as path:
        return scan_layer(path).collect()


def validation_stats_key(day: date) -> str:
    return f"layers/validation_stats/date={day.isoformat()}.json"


def estimated_key(day: date) -> str:
    return f"vee/estimated_readings/date={day.isoformat()}/part-0.parquet"


def features_key(day: date) -> str:
    return f"features/hourly/date={day.isoformat()}/part-0.parquet"


def read_parquet_if_exists(store: BlobStore, key: str) -> pl.DataFrame | None:
    return read_parquet(store, key) if store.exists(key) else None


def quarantine_key(day: date) -> str:
    return f"quarantine/date={day.isoformat()}/quarantined_readings.jsonl"


def failed_key(checksum: str, source_key: str) -> str:
    """Where an unreadable file is kept for review: by checksum, then the landing key, every
    segment a lake name with room left for the note's suffix (``failed_note_key``)."""
    folder, _, name = source_key.rpartition("/")
    return f"failed/{checksum[:16]}/" + _lake_path(folder, name, NAME_MAX - len(FAILED_NOTE_SUFFIX))


def failed_note_key(checksum: str, source_key: str) -> str:
    """The JSON note saying why ``failed_key(checksum, source_key)`` failed."""
    return failed_key(checksum, source_key) + FAILED_NOTE_SUFFIX


def archive_key(day: date) -> str:
    return f"archive/meter_readings/date={day.isoformat()}/part-0.parquet"


def write_parquet(
    store: BlobStore, key: str, frame: pl.DataFrame, compression: str = "zstd", statistics: bool = True
) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression=compression, statistics=statistics)
    store.write(key, buffer.getvalue())


# How the staged rows' columns are encoded: dictionaries for the text (a day repeats its meters,
# instants, values, units and files), and the line number, nearly always one more than the row
# before, as deltas (a dictionary of distinct numbers is only overhead).
STAGED_DELTA_COLUMNS = {"line_number": "DELTA_BINARY_PACKED"}


def write_staged(store: BlobStore, key: str, parts: list[pl.DataFrame]) -> None:
    """A chunk's staged rows for one day (``parts`` of the same columns, one after the other, in
    one Parquet row group, pyarrow's limit of 1,048,576 rows allowing: one dictionary per column,
    not one per part), as Parquet: a new object each time, staged files are never rewritten.
    Uncompressed: validate_day reads a day's staged rows once per slice of meters (nine passes for 4.8M rows),
    and decompressing every page each time cost more than the passes' own filtering (README,
    "Benchmarks"). Encoded by pyarrow as ``STAGED_DELTA_COLUMNS`` says, for a day's 4.8M rows
    against polars' own writer: 0.53 against 0.70 s of CPU to write, the nine passes 0.65 against
    0.93 s, and 29 against 86 MB (0.15x the CSV)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = parts[0].columns
    delta = {name: encoding for name, encoding in STAGED_DELTA_COLUMNS.items() if name in columns}
    # Arrow's chunked columns hold the parts as they are: no copy of their text into one buffer.
    table = pa.concat_tables(part.to_arrow(compat_level=pl.CompatLevel.newest()) for part in parts)
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        row_group_size=max(1, table.num_rows),
        compression="none",
        write_statistics=False,
        use_dictionary=[name for name in columns if name not in delta],
        column_encoding=delta,
    )
    store.write(key, buffer.getvalue())


def write_layer(
    store: BlobStore, key: str, frame: pl.DataFrame, statistics: bool = True, compression: str = "lz4"
) -> None:
    """Internal hand-over between steps: written once, read once or twice, so favour speed (lz4)
    over size; published data (archive, features, estimates) keeps zstd. ``statistics=False`` for a
    layer read whole, never filtered on its columns' ranges."""
    write_parquet(store, key, frame, compression=compression, statistics=statistics)


# ---------------------------------------------------------------------------------- meter slices
# A day of 50,000 meters is 4.8M rows. The heavy steps take it a slice of meters at a time, so no
# step holds more than one slice's working set: a layer is written one Parquet row group per slice,
# and the next step reads it back one row group at a time. A meter's rows always fall in one slice
# (a hash of its id, spaces stripped as the rules strip them), so every per-meter rule (duplicates,
# stuck runs, gap estimates) sees all of a meter's rows together.


# Each slice costs a pass over the day's staged files in raw_meter_files: past this many, slices
# grow instead (a day of 4.8M rows is 9 slices of 600,000 rows).
MAX_SLICES = 64


def slice_count(rows: int, slice_rows: int) -> int:
    """How many slices a day of ``rows`` rows is cut into (at least one, at most ``MAX_SLICES``)."""
    return min(MAX_SLICES, max(1, math.ceil(rows / max(1, slice_rows))))


def meter_slice(slices: int, column: str = "meter_id") -> pl.Expr:
    """The slice (0 .. slices - 1) of each row's meter."""
    return (pl.col(column).str.strip_chars().hash(seed=20240304) % slices).cast(pl.UInt32)


@contextmanager
def local_copy(store: BlobStore, key: str) -> Iterator[Path]:
    """A local file to read ``key`` from: the object's own file in a folder, a temporary download
    from S3 (removed on exit)."""
    if isinstance(store, LocalBlobStore):
        yield store.local_path(key)
        return
    with tempfile.TemporaryDirectory(prefix="greenstream-") as tmp:
        path = Path(tmp) / Path(key).name
        store.read_to_file(key, path)
        yield path


@contextmanager
def local_copies(store: BlobStore, keys: list[str]) -> Iterator[list[Path]]:
    with ExitStack() as stack:
        yield [stack.enter_context(local_copy(store, key)) for key in keys]


def iter_slices(path: Path, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
    """A layer written by ``SliceWriter``, one slice (record batch or row group) at a time; at least
    one frame.

    Of Parquet, polars' own reader takes each row group by its row range (it reads only that
    group): about five times faster than pyarrow's ``read_row_group`` and a conversion to polars."""
    import pyarrow.parquet as pq

    if is_arrow(path):
        yield from _iter_arrow_slices(path, columns)
        return
    metadata = pq.ParquetFile(path).metadata
    scan = pl.scan_parquet(path, hive_partitioning=False)
    if columns is not None:
        scan = scan.select(columns)
    if metadata.num_row_groups == 0:
        yield scan.head(0).collect()
    offset = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        yield scan.slice(offset, rows).collect()
        offset += rows


def _iter_arrow_slices(path: Path, columns: list[str] | None) -> Iterator[pl.DataFrame]:
    """Record batch k of an Arrow file is slice k. Only the columns asked for are decompressed;
    a frame keeps what it shares with the memory map alive on its own (Arrow's buffers hold it)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(path)) as source:
        schema = ipc.open_file(source).schema
        options = None
        if columns is not None:
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise pl.exceptions.ColumnNotFoundError(f"{path} has no column(s) {missing}")
            options = ipc.IpcReadOptions(included_fields=[schema.get_field_index(c) for c in columns])
        reader = ipc.open_file(source, options=options)
        if reader.num_record_batches == 0:
            empty = reader.schema.empty_table()
            yield pl.from_arrow(empty if columns is None else empty.select(columns))  # type: ignore[misc]
        for k in range(reader.num_record_batches):
            batch = reader.get_batch(k)
            # included_fields keeps the file's column order: give the caller's.
            yield pl.from_arrow(batch if columns is None else batch.select(columns))  # type: ignore[misc]


def sliced_groups(path: Path) -> list[tuple[int, int]] | None:
    """(first row, rows) of each row group of a file ``SliceWriter`` wrote, whose row group k holds
    the meters of slice k (``meter_slice(row groups)``); None for any other file."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    if (metadata.metadata or {}).get(METER_SLICES.encode()) != b"1":
        return None
    groups, offset = [], 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        groups.append((offset, rows))
        offset += rows
    return groups


def read_meters(
    paths: list[Path], columns: list[str], meters: pl.Series, where: pl.Expr | None = None
) -> pl.DataFrame | None:
    """Rows of ``meters`` in these Parquet files (None when there are none), and of them only those
    ``where`` keeps (applied as the files are read). Of a file written by ``SliceWriter`` only the
    row groups of those meters' slices are read: a slice of today's meters reads one row group of
    an earlier day cut into as many slices, not the whole day."""
    if not paths:
        return None
    wanted = meters.alias("meter_id").to_frame()
    parts = []
    for path in paths:
        scan = pl.scan_parquet(path, hive_partitioning=False).select(columns)
        groups = sliced_groups(path)
        if groups is None:
            parts.append(scan)
            continue
        if not groups:  # a day with no rows
            continue
        needed = wanted.select(meter_slice(len(groups)).unique().sort()).to_series().to_list()
        parts.extend(scan.slice(*groups[k]) for k in needed)
    if not parts:
        return pl.scan_parquet(paths[0], hive_partitioning=False).select(columns).head(0).collect()
    rows = pl.concat(parts, how="vertical_relaxed")
    if where is not None:
        rows = rows.filter(where)
    return rows.filter(pl.col("meter_id").is_in(meters.implode())).collect()


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """``items`` one ahead: the next is produced on a thread while the caller works on this one
    (polars and pyarrow release the GIL while they read). Errors surface where they would have."""
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        upcoming = pool.submit(next, items, done)
        while (item := upcoming.result()) is not done:
            upcoming = pool.submit(next, items, done)
            yield item  # type: ignore[misc]


class OneBehind:
    """Calls run on a thread of their own, one at a time and at most one behind the caller:
    ``submit`` first waits for the call before it (raising its error, if it failed), so the caller
    works out the next slice while this one is written or checked. Leaving the block (or ``close``)
    waits for the last call and ends the thread.

        with lake.OneBehind("writer") as behind:
            for part in parts:
                behind.submit(write, part)
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._thread: ThreadPoolExecutor | None = None
        self._pending: Future[Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.wait()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        self._pending = self._thread.submit(fn, *args)

    def wait(self) -> None:
        """Until the last call submitted has finished; its error, if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._thread is not None:
                self._thread.shutdown()
                self._thread = None

    def __enter__(self) -> OneBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def mapped(fn: Callable[[T], U], items: Iterable[T], workers: int = 2) -> Iterator[Iterator[U]]:
    """``fn`` of each item, in the items' order, with up to ``workers`` items worked on at once on
    threads of their own (polars releases the GIL): a slice's rules run while the one before is
    still at work, which keeps both cores busy where one slice alone does not. An error surfaces
    where its item's result would have; leaving the block cancels the items not yet started and
    waits for those running.

        with lake.mapped(work, slices) as results:
            for result in results:
                ...
    """
    window: deque[Future[U]] = deque()

    def results() -> Iterator[U]:
        for item in items:
            window.append(pool.submit(fn, item))
            del item
            if len(window) >= workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mapped") as pool:
        try:
            yield results()
        finally:
            for future in window:
                future.cancel()


@contextmanager
def read_slices(
    store: BlobStore, key: str, columns: list[str] | None = None
) -> Iterator[Iterator[pl.DataFrame]]:
    """``iter_slices`` over a lake object (downloaded first when it is on S3)."""
    with local_copy(store, handover_key(store, key)) as path:
        yield prefetched(iter_slices(path, columns))


# Parquet pages of up to this many rows, not pyarrow's 20,000: a zstd context and statistics a
# page, five times fewer (the archive 0.75 -> 0.70 s of CPU a day, and 12 % smaller).
PAGE_ROWS = 100_000


class SliceWriter:
    """Writes a frame one slice at a time, one Parquet row group per slice (or, for a key ending
    ``.arrow``, one Arrow IPC record batch per slice), to a local temporary file, and publishes it
    as ``key`` only when the block ends without error (atomic, as ``BlobStore.write``): a failed
    step leaves the previous version in place.

        with SliceWriter(store, key) as out:
            for part in parts:
                out.write(part)

    A slice is encoded and compressed on a writer thread while the caller computes the next one
    (one slice in flight at most; an error there is raised by the next ``write`` or at the end).

    Hand-over layers (Arrow, lz4) carry no column statistics: they are read a whole slice at a time.
    What people and other engines read (the archive, estimates, features: zstd) keeps them, for
    their readers' row-group pruning.
    """

    def __init__(
        self,
        store: BlobStore,
        key: str,
        compression: str = "lz4",
        statistics: bool = False,
        meter_slices: bool = False,
    ) -> None:
        self.store, self.key = store, key
        # A key ending .arrow is an Arrow IPC file (a hand-over layer, see HANDOVER_LAYERS): one
        # record batch per slice, lz4 unless told otherwise; any other key is Parquet.
        self.arrow = key.endswith(ARROW_SUFFIX)
        self.compression, self.statistics = compression, statistics
        # The caller's promise that its k-th frame holds the meters of slice k (``meter_slice``) of
        # as many slices as it writes frames: marked in the footer, for ``read_meters`` (Parquet).
        if meter_slices and self.arrow:
            raise ValueError("meter_slices marks Parquet footers: read_meters reads Parquet files")
        self.meter_slices = meter_slices
        self.rows = 0
        self.schema: pl.Schema | None = None
        self._writer: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._behind: OneBehind | None = None
        self._discarded = False
        self._finished = False

    def discard(self) -> None:
        """Publish nothing when the block ends: the object keeps its previous version."""
        self._discarded = True

    def __enter__(self) -> SliceWriter:
        self._tmp = tempfile.TemporaryDirectory(prefix="greenstream-")
        self.path = Path(self._tmp.name) / ("part.arrow" if self.arrow else "part.parquet")
        self._behind = OneBehind("slice-writer")
        return self

    def write(self, frame: pl.DataFrame) -> None:
        assert self._behind is not None, "use SliceWriter in a with block"
        if self._finished:
            raise ValueError(f"{self.key} is finished (published as a copy): nothing more can be written")
        if self.schema is None:
            self.schema = frame.schema
        elif frame.schema != self.schema:
            frame = frame.select(self.schema.names()).cast(dict(self.schema))
        # Polars' string views go to Parquet and Arrow as they are (no copy into large strings).
        table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
        # The slice before is written first (the writer is opened, and its schema read, here).
        self._behind.wait()
        if self._writer is None:
            self._arrow_schema = table.schema
            self._writer = self._open(table.schema)
        elif table.schema != self._arrow_schema:
            table = table.cast(self._arrow_schema)
        # Every slice gets its row group (record batch), empty or not: group k is slice k.
        self._behind.submit(self._write, table)
        self.rows += table.num_rows

    def _open(self, schema: Any) -> Any:
        import pyarrow.ipc as ipc
        import pyarrow.parquet as pq

        if self.arrow:
            options = ipc.IpcWriteOptions(compression=self.compression)
            return ipc.new_file(str(self.path), schema, options=options)
        return pq.ParquetWriter(
            self.path,
            schema,
            compression=self.compression,
            write_statistics=self.statistics,
            max_rows_per_page=PAGE_ROWS,
        )

    def _write(self, table: Any) -> None:
        import pyarrow as pa

        if not self.arrow:
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))
            return
        # After combine_chunks every column is one chunk, so the slice is one batch (none if empty).
        batches = table.combine_chunks().to_batches()
        if len(batches) == 1:
            batch = batches[0]
        elif batches:
            batch = pa.concat_batches(batches)
        else:
            batch = pa.RecordBatch.from_pylist([], schema=self._arrow_schema)
        self._writer.write_batch(batch)

    def _finish(self) -> None:
        """The last slice written and the file closed (once)."""
        assert self._tmp is not None and self._behind is not None
        if self._finished:
            return
        self._finished = True
        try:
            self._behind.close()
        finally:
            if self._writer is not None:
                if self.meter_slices:
                    self._writer.add_key_value_metadata({METER_SLICES: "1"})
                self._writer.close()

    def publish_copy(self, key: str) -> None:
        """Finish the file and publish it as ``key`` too, now: one file that is two objects (the
        cleansed readings and the same rows with their flags, written once). Nothing more can be
        written; the writer's own key is published when the block ends, as always. Published
        objects are never written in place (every write is a new file renamed over the old), so
        on a local lake the two keys share the file's one copy."""
        self._finish()
        if self._writer is None:
            raise ValueError(f"nothing was written for {key}: write at least one (empty) frame")
        copy = self.path.with_name("copy-" + self.path.name)
        try:
            os.link(self.path, copy)
        except OSError:
            shutil.copyfile(self.path, copy)
        self.store.write_file(key, copy)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tmp is not None and self._behind is not None
        try:
            self._finish()
            if exc_type is None and not self._discarded:
                if self._writer is None:
                    raise ValueError(f"nothing was written for {self.key}: write at least one (empty) frame")
                self.store.write_file(self.key, self.path)
        finally:
            self._tmp.cleanup()


@contextmanager
def published_copy(writer: SliceWriter, key: str) -> Iterator[None]:
    """``writer.publish_copy(key)`` when the block ends without error, where a writer of its own
    for ``key`` would have been published."""
    yield
    writer.publish_copy(key)


class JsonLinesWriter:
    """JSON Lines written a frame at a time to a local temporary file, published as ``key`` when the
    block ends without error (atomic, as ``SliceWriter``)."""

    def __init__(self, store: BlobStore, key: str) -> None:
        self.store, self.key = store, key
        self.rows = 0

    def __enter__(self) -> JsonLinesWriter:
        self._tmp = tempfile.TemporaryDirectory(prefix="greenstream-")
        self.path = Path(self._tmp.name) / "part.jsonl"
        self._handle = self.path.open("wb")
        return self

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height:
            frame.write_ndjson(self._handle)
            self.rows += frame.height

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._handle.close()
            if exc_type is None:
                self.store.write_file(self.key, self.path)
        finally:
            self._tmp.cleanup()


def parquet_footer(store: BlobStore, key: str) -> Any:
    """A Parquet object's metadata (``pyarrow.parquet.FileMetaData``), read from its footer alone:
    one or two reads of the object's tail, however large the object (on S3, ranged GETs)."""
    import pyarrow.parquet as pq

    tail = store.read_tail(key, _FOOTER_GUESS)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError(f"{key} is not a Parquet file (no PAR1 footer)")
    length = int.from_bytes(tail[-8:-4], "little") + 8
    if length > len(tail):
        tail = store.read_tail(key, length)
        if len(tail) < length:
            raise ValueError(f"{key}: its Parquet footer says {length} bytes, the object has {len(tail)}")
    # The footer's own bytes, behind a leading magic: all pyarrow reads of a file to parse them.
    return pq.read_metadata(io.BytesIO(b"PAR1" + tail[-length:]))


# A footer of a day's layer (tens of row groups and columns) is a few kilobytes.
_FOOTER_GUESS = 64 * 1024


def parquet_rows(store: BlobStore, key: str) -> int:
    """Rows in a Parquet object, from its footer."""
    return parquet_footer(store, key).num_rows


def parquet_row_groups(store: BlobStore, key: str) -> int:
    """Row groups in a Parquet object (a layer written by ``SliceWriter``: its slices)."""
    return parquet_footer(store, key).num_row_groups


def layer_slices(store: BlobStore, key: str) -> int:
    """Slices in a layer ``SliceWriter`` wrote: its record batches (Arrow) or row groups (Parquet)."""
    if not key.endswith(ARROW_SUFFIX):
        return parquet_row_groups(store, key)
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with local_copy(store, key) as path, pa.memory_map(str(path)) as source:
        return ipc.open_file(source).num_record_batches


def read_parquet(store: BlobStore, key: str) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(store.read(key)))


def write_json(store: BlobStore, key: str, payload: Any) -> None:
    store.write(key, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())


def read_json(store: BlobStore, key: str) -> Any:
    return json.loads(store.read(key))


def write_jsonl(store: BlobStore, key: str, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.write_ndjson(buffer)
    store.write(key, buffer.getvalue())


def read_jsonl(store: BlobStore, key: str) -> pl.DataFrame:
    data = store.read(key)
    return pl.read_ndjson(io.BytesIO(data), infer_schema_length=None) if data else pl.DataFrame()
