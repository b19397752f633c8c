"""Lake keys made from landing keys: every segment a name a file system holds (255 bytes) and
the folder store lists (no leading dot), the same on every retry, distinct for distinct names."""

import pytest

from greenstream_assets.storage import lake

CHECKSUM = "0123456789abcdef" * 4


@pytest.mark.parametrize("name", ["a.csv", "meter 1.csv", "z\u00e4hler.csv", "x" * 255, "a.b.c"])
def test_a_name_that_fits_is_kept(name):
    assert lake.lake_name(name) == name


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("m" * 300 + ".csv", "mmm", ".csv"),
        ("m" * 256, "mmm", ""),
        ("\u00e4" * 200, "\u00e4\u00e4", ""),  # 400 bytes of two-byte characters, none cut in half
        ("a." + "b" * 300, "a.bbb", ""),  # an "extension" too long to keep
        (".keep", "keep~", ""),  # hidden on a folder store
        (".m2.csv", "m2~", ".csv"),
        ("...", "~", ""),
    ],
)
def test_a_name_too_long_or_hidden_keeps_its_start_and_extension_beside_a_digest(name, start, end):
    short = lake.lake_name(name)
    assert len(short.encode()) <= 255 and not short.startswith(".")
    assert short.startswith(start) and short.endswith(end)
    assert short == lake.lake_name(name)  # a retry writes the same key
    assert short != lake.lake_name(name + "x") != lake.lake_name("x" + name)
    short.encode("utf-8")  # whole characters only


def test_lake_keys_of_a_long_landing_key_fit_segment_by_segment():
    # On S3 a landing key's segment can be up to 1,024 bytes; a lake folder holds 255.
    key = "f" * 400 + "/" + "d" * 240 + ".csv"
    backup = lake.raw_backup_key(CHECKSUM, key)
    failed, note = lake.failed_key(CHECKSUM, key), lake.failed_note_key(CHECKSUM, key)
    for derived in (backup, failed, note):
        assert all(len(segment.encode()) <= 255 for segment in derived.split("/")), derived
    assert backup.rpartition("/")[2].startswith(CHECKSUM[:16] + "-ddd")
    assert note == failed + ".reason.json"
    # Keys that fit are as they always were.
    assert (
        lake.raw_backup_key(CHECKSUM, "2024-03-04/m1.csv") == "raw/files/2024-03-04/0123456789abcdef-m1.csv"
    )
    assert lake.failed_key(CHECKSUM, "d/m1.csv") == "failed/0123456789abcdef/d/m1.csv"
    assert (
        lake.legacy_raw_backup_key(CHECKSUM, key) == f"raw/files/{'f' * 400}/{CHECKSUM[:16]}-{'d' * 240}.csv"
    )
