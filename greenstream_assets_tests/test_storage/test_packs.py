"""The raw backup's packs of small files: byte for byte the zip Python's zipfile writes."""

import io
import zipfile
from datetime import UTC, datetime

import pytest

from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import LocalBlobStore


def zipfile_pack(members: list[tuple[str, bytes]], when: datetime) -> bytes:
    """What write_raw_pack wrote through zipfile before it packed the records itself."""
    buffer = io.BytesIO()
    stamp = max(when, datetime(1980, 1, 1, tzinfo=when.tzinfo)).timetuple()[:6]
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as pack:
        for name, data in members:
            member = zipfile.ZipInfo(name, date_time=stamp)
            member.external_attr = 0o644 << 16
            pack.writestr(member, data)
    return buffer.getvalue()


MEMBERS = [
    ("2024-03-04/0123456789abcdef-meter 1.csv", b"meter_id,timestamp,energy_value,energy_unit\nM1,x,1,kW\n"),
    ("0123456789abcdef-top.csv", b""),
    ("2024-03-04/fedcba9876543210-z\u00e4hler \u00fc.csv", "z\u00e4hler,\u00fc\n".encode()),
    ("deep/er/folder/aaaaaaaaaaaaaaaa-m.csv", bytes(range(256)) * 40),
]


@pytest.mark.parametrize(
    "when",
    [
        datetime(2024, 3, 4, 17, 45, 59, tzinfo=UTC),  # an odd second: zip keeps two-second steps
        datetime(2026, 12, 31, 23, 59, 58, tzinfo=UTC),
        datetime(1975, 6, 1, tzinfo=UTC),  # before zip's epoch: 1980-01-01, as before
    ],
)
def test_a_pack_is_the_zip_zipfile_writes(when):
    packed = lake.zip_stored(MEMBERS, when)
    assert packed == zipfile_pack(MEMBERS, when)
    with zipfile.ZipFile(io.BytesIO(packed)) as pack:
        assert pack.testzip() is None
        assert [(i.filename, pack.read(i)) for i in pack.infolist()] == MEMBERS


def test_a_pack_of_no_files_is_an_empty_zip():
    when = datetime(2024, 3, 4, tzinfo=UTC)
    assert lake.zip_stored([], when) == zipfile_pack([], when)


def test_more_than_65535_files_get_the_zip64_end_records_zipfile_writes():
    when = datetime(2024, 3, 4, 1, 2, 3, tzinfo=UTC)
    members = [(f"2024-03-04/{n:016x}-meter-{n}.csv", f"M{n},1\n".encode()) for n in range(70_000)]
    packed = lake.zip_stored(members, when)
    assert packed == zipfile_pack(members, when)
    with zipfile.ZipFile(io.BytesIO(packed)) as pack:
        assert len(pack.infolist()) == 70_000
        assert pack.read("2024-03-04/000000000001116f-meter-69999.csv") == b"M69999,1\n"


def test_a_pack_past_zips_2_gb_offsets_is_refused(monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1_000)
    with pytest.raises(ValueError, match="^a pack of 1,086 bytes: packs hold one chunk of small files$"):
        lake.zip_stored([("a.csv", b"x" * 1_000)], datetime(2024, 3, 4, tzinfo=UTC))


def test_a_backup_is_read_back_from_its_pack(tmp_path):
    store = LocalBlobStore(tmp_path)
    files = [("a" * 64, "2024-03-04/m1.csv", b"one\n"), ("b" * 64, "m2.csv", b"two\n")]
    lake.write_raw_pack(store, "batch-1", files, datetime(2024, 3, 4, tzinfo=UTC))
    assert [o.key for o in store.list()] == ["raw/packs/batch-1.zip"]
    for checksum, key, data in files:
        assert lake.read_raw_backup(store, checksum, key, "batch-1") == data
    with zipfile.ZipFile(tmp_path / "raw/packs/batch-1.zip") as pack:
        assert pack.namelist() == ["2024-03-04/aaaaaaaaaaaaaaaa-m1.csv", "bbbbbbbbbbbbbbbb-m2.csv"]
