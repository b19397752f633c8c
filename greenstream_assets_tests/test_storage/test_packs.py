"""The raw backup's packs of small files, as ingestions wrote them before every file was backed up
alone: no longer written, still read back."""

import io
import zipfile
from datetime import UTC, datetime

from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import BlobStore, LocalBlobStore


def zipfile_pack(members: list[tuple[str, bytes]], when: datetime) -> bytes:
    """A pack as those ingestions wrote it: Python's zipfile, uncompressed, zip64 allowed."""
    buffer = io.BytesIO()
    stamp = max(when, datetime(1980, 1, 1, tzinfo=when.tzinfo)).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as pack:
        for name, data in members:
            member = zipfile.ZipInfo(name, date_time=stamp)
            member.external_attr = 0o644 << 16
            pack.writestr(member, data)
    return buffer.getvalue()


def legacy_pack(store: BlobStore, batch: str, files: list[tuple[str, str, bytes]]) -> None:
    """Back up ``(checksum, source key, bytes)`` as an ingestion of ledger batch ``batch`` did
    before per-file backups: one zip, each member named as its own backup under raw/files/."""
    members = [
        (lake.legacy_raw_backup_key(checksum, key).removeprefix("raw/files/"), data)
        for checksum, key, data in files
    ]
    store.write(lake.raw_pack_key(batch), zipfile_pack(members, datetime(2024, 3, 4, tzinfo=UTC)))


def test_a_backup_is_read_back_from_its_pack(tmp_path):
    store = LocalBlobStore(tmp_path)
    files = [
        ("a" * 64, "2024-03-04/m1.csv", b"one\n"),
        ("b" * 64, "m2.csv", b"two\n"),
        ("c" * 64, "2024-03-04/z\u00e4hler \u00fc.csv", b""),
    ]
    legacy_pack(store, "batch-1", files)
    assert [o.key for o in store.list()] == ["raw/packs/batch-1.zip"]
    for checksum, key, data in files:
        # Found by itself (no object of its own), or where the manifest says.
        assert lake.read_raw_backup(store, checksum, key, "batch-1") == data
        assert lake.read_raw_backup(store, checksum, key, "batch-1", lake.raw_pack_key("batch-1")) == data
    with zipfile.ZipFile(tmp_path / "raw/packs/batch-1.zip") as pack:
        assert pack.namelist()[:2] == ["2024-03-04/aaaaaaaaaaaaaaaa-m1.csv", "bbbbbbbbbbbbbbbb-m2.csv"]


def test_a_member_of_a_pack_of_more_than_65535_files_is_read(tmp_path):
    # A chunk of 32 MB held up to ~100,000 small files: zip64 end records.
    store = LocalBlobStore(tmp_path)
    files = [(f"{n:064x}", f"2024-03-04/meter-{n}.csv", f"M{n},1\n".encode()) for n in range(70_000)]
    legacy_pack(store, "batch-2", files)
    assert (
        lake.read_raw_backup(store, f"{69_999:064x}", "2024-03-04/meter-69999.csv", "batch-2")
        == b"M69999,1\n"
    )
