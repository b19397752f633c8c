"""The local blob store: atomic writes, safe keys, change markers."""

import os

import pytest

from greenstream_assets.storage.blobs import LocalBlobStore, UnsafeKey, check_key


@pytest.mark.parametrize("key", ["a.csv", "2024-03-04/meter 1.csv", "dir/zähler.csv", "a..b/c"])
def test_safe_keys_pass(key):
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a\x00b", "a/"]
)
def test_unsafe_keys_are_refused(key, tmp_path):
    with pytest.raises(UnsafeKey):
        check_key(key)
    with pytest.raises(UnsafeKey):
        LocalBlobStore(tmp_path).write(key, b"x")


def test_a_crash_mid_write_leaves_the_previous_object(tmp_path, monkeypatch):
    store = LocalBlobStore(tmp_path)
    store.write("day/part-0.parquet", b"old version")

    def crash(fd):
        raise OSError("disk died during fsync")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk died"):
        store.write("day/part-0.parquet", b"new version, half written")
    monkeypatch.undo()
    assert store.read("day/part-0.parquet") == b"old version"
    # No temporary file is left behind, and none is ever listed.
    assert sorted(p.name for p in (tmp_path / "day").iterdir()) == ["part-0.parquet"]
    assert [o.key for o in store.list()] == ["day/part-0.parquet"]


def test_listing_reports_a_new_version_when_content_changes(tmp_path):
    store = LocalBlobStore(tmp_path)
    store.write("a.csv", b"one")
    (before,) = store.list()
    os.utime(tmp_path / "a.csv", ns=(1, 1))
    store.write("a.csv", b"two")
    (after,) = store.list()
    assert (before.key, before.size) == (after.key, after.size) == ("a.csv", 3)
    assert before.version != after.version
    assert store.exists("a.csv") and not store.exists("b.csv")
    store.delete("a.csv")
    assert list(store.list()) == []
