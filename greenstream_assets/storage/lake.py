"""The lake's layout and its file formats: every path the platform writes is named here."""

from __future__ import annotations

import io
import json
from datetime import date
from typing import Any

import polars as pl

from greenstream_assets.storage.blobs import BlobStore

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


def parquet_rows(store: BlobStore, key: str) -> int:
    """Rows in a Parquet object, from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(io.BytesIO(store.read(key))).metadata.num_rows


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
