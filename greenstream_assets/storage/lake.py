"""The lake's layout and its file formats: every path the platform writes is named here."""

from __future__ import annotations

import io
import json
import math
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path
from types import TracebackType
from typing import Any

import polars as pl

from greenstream_assets.storage.blobs import BlobStore, LocalBlobStore

LEDGER_FILES = "_ledger/files/"
LEDGER_BATCHES = "_ledger/batches/"


def raw_backup_key(checksum: str, source_key: str) -> str:
    return f"raw/files/{checksum[:16]}/{source_key}"


def raw_manifest_key(day: date) -> str:
    return f"raw/manifests/date={day.isoformat()}.json"


# The last steps of a day write these when they succeed: a day is done when every one of them
# carries the digest of the day's current files.
DAY_DONE_STEPS = ("daily_peaks", "faulty_meters")


def day_done_key(day: date, step: str) -> str:
    return f"_state/days/date={day.isoformat()}/{step}.json"


def mark_day_done(store: BlobStore, day: date, step: str) -> None:
    """Record that ``step`` finished ``day`` from the files in the day's raw manifest."""
    digest = read_json(store, raw_manifest_key(day))["files_digest"]
    write_json(store, day_done_key(day, step), {"files_digest": digest})


def day_done_digests(store: BlobStore, day: date) -> set[str | None]:
    digests = set()
    for step in DAY_DONE_STEPS:
        key = day_done_key(day, step)
        digests.add(read_json(store, key)["files_digest"] if store.exists(key) else None)
    return digests


def staging_key(day: date, batch: str) -> str:
    return f"staging/date={day.isoformat()}/{batch}.parquet"


def layer_key(layer: str, day: date) -> str:
    return f"layers/{layer}/date={day.isoformat()}.parquet"


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
    return f"failed/{checksum[:16]}/{source_key}"


def archive_key(day: date) -> str:
    return f"archive/meter_readings/date={day.isoformat()}/part-0.parquet"


def write_parquet(store: BlobStore, key: str, frame: pl.DataFrame, compression: str = "zstd") -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression=compression, statistics=True)
    store.write(key, buffer.getvalue())


def write_layer(store: BlobStore, key: str, frame: pl.DataFrame) -> None:
    """Internal hand-over between steps: written once, read once or twice, so favour speed (lz4)
    over size; published data (archive, features, estimates) keeps zstd."""
    write_parquet(store, key, frame, compression="lz4")


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
    """A layer written by ``SliceWriter``, one slice (row group) at a time; at least one frame."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if parquet.num_row_groups == 0:
        yield pl.from_arrow(parquet.schema_arrow.empty_table().select(columns or parquet.schema_arrow.names))
    for group in range(parquet.num_row_groups):
        yield pl.from_arrow(parquet.read_row_group(group, columns=columns))  # type: ignore[misc]


@contextmanager
def read_slices(
    store: BlobStore, key: str, columns: list[str] | None = None
) -> Iterator[Iterator[pl.DataFrame]]:
    """``iter_slices`` over a lake object (downloaded first when it is on S3)."""
    with local_copy(store, key) as path:
        yield iter_slices(path, columns)


class SliceWriter:
    """Writes a frame one slice at a time, one Parquet row group per slice, to a local temporary
    file, and publishes it as ``key`` only when the block ends without error (atomic, as
    ``BlobStore.write``): a failed step leaves the previous version in place.

        with SliceWriter(store, key) as out:
            for part in parts:
                out.write(part)
    """

    def __init__(self, store: BlobStore, key: str, compression: str = "lz4") -> None:
        self.store, self.key, self.compression = store, key, compression
        self.rows = 0
        self.schema: pl.Schema | None = None
        self._writer: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> SliceWriter:
        self._tmp = tempfile.TemporaryDirectory(prefix="greenstream-")
        self.path = Path(self._tmp.name) / "part.parquet"
        return self

    def write(self, frame: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        if self.schema is None:
            self.schema = frame.schema
        elif frame.schema != self.schema:
            frame = frame.select(self.schema.names()).cast(dict(self.schema))
        table = frame.to_arrow()
        if self._writer is None:
            self._arrow_schema = table.schema
            self._writer = pq.ParquetWriter(self.path, table.schema, compression=self.compression)
        elif table.schema != self._arrow_schema:
            table = table.cast(self._arrow_schema)
        # Every slice gets its row group, empty or not: row group k is slice k.
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._tmp is not None
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                if self._writer is None:
                    raise ValueError(f"nothing was written for {self.key}: write at least one (empty) frame")
                self.store.write_file(self.key, self.path)
        finally:
            self._tmp.cleanup()


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


def parquet_rows(store: BlobStore, key: str) -> int:
    """Rows in a Parquet object, from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(io.BytesIO(store.read(key))).metadata.num_rows


def parquet_row_groups(store: BlobStore, key: str) -> int:
    """Row groups in a Parquet object (a layer written by ``SliceWriter``: its slices)."""
    import pyarrow.parquet as pq

    with local_copy(store, key) as path:
        return pq.ParquetFile(path).metadata.num_row_groups


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
