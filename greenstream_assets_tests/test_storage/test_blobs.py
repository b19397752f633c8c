"""The local blob store: atomic writes, safe keys, change markers."""

import errno
import os

import pytest

from greenstream_assets.storage import blobs
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


def step_file(tmp_path, data: bytes):
    """A finished step output in a working folder of its own, as SliceWriter leaves it."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    source = work / "part.parquet"
    source.write_bytes(data)
    return source


def test_publishing_a_file_moves_it_into_place_on_the_same_file_system(tmp_path):
    store = LocalBlobStore(tmp_path / "lake")
    store.write("layers/day.parquet", b"old version")
    source = step_file(tmp_path, b"new version")
    inode = source.stat().st_ino
    store.write_file("layers/day.parquet", source)
    assert store.read("layers/day.parquet") == b"new version"
    # Renamed, not copied: the same file, now under the key, and nothing left in the work folder.
    assert (tmp_path / "lake" / "layers" / "day.parquet").stat().st_ino == inode
    assert not source.exists()
    assert [o.key for o in store.list()] == ["layers/day.parquet"]
    # A key in a folder that does not exist yet.
    store.write_file("archive/date=2024-03-04/part-0.parquet", step_file(tmp_path, b"first"))
    assert store.read("archive/date=2024-03-04/part-0.parquet") == b"first"


def test_publishing_a_file_across_file_systems_copies_it(tmp_path, monkeypatch):
    store = LocalBlobStore(tmp_path / "lake")
    store.write("layers/day.parquet", b"old version")
    source = step_file(tmp_path, b"new version")
    real_replace = os.replace

    def cross_device(src, dst):
        if os.fspath(src) == os.fspath(source):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", cross_device)
    store.write_file("layers/day.parquet", source)
    assert store.read("layers/day.parquet") == b"new version"
    # Copied through a temporary file beside the key: the caller's file is still there, no
    # temporary file is left.
    assert source.read_bytes() == b"new version"
    assert sorted(p.name for p in (tmp_path / "lake" / "layers").iterdir()) == ["day.parquet"]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(("fsync", OSError(errno.EIO, "disk died during fsync")), id="fsync"),
        pytest.param(("replace", PermissionError(errno.EACCES, "read-only lake")), id="rename"),
    ],
)
def test_a_failed_publish_of_a_file_leaves_the_previous_object(tmp_path, monkeypatch, failure):
    name, error = failure
    store = LocalBlobStore(tmp_path / "lake")
    store.write("layers/day.parquet", b"old version")
    source = step_file(tmp_path, b"new version")

    def fail(*args):
        raise error

    monkeypatch.setattr(os, name, fail)
    with pytest.raises(OSError) as raised:
        store.write_file("layers/day.parquet", source)
    monkeypatch.undo()
    assert raised.value is error
    assert store.read("layers/day.parquet") == b"old version"
    assert sorted(p.name for p in (tmp_path / "lake" / "layers").iterdir()) == ["day.parquet"]


def test_listing_goes_through_folders_as_os_walk_does(tmp_path):
    # A folder's files by name, then its subfolders by name, depth first; hidden names (in-flight
    # temporary files, hidden folders) left out, linked folders not entered; a prefix lists its own.
    for name in [
        "b.csv",
        "a.csv",
        "2024-03-05/z.csv",
        "2024-03-04/m 2.csv",
        "2024-03-04/m1.csv",
        "2024-03-04/sub/deeper/x.csv",
        "2024-03-04/.m3.csv.1234.tmp",
        ".hidden/secret.csv",
        "empty/.keep",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "linked").symlink_to(tmp_path / "2024-03-05", target_is_directory=True)
    (tmp_path / "c-link.csv").symlink_to(tmp_path / "a.csv")
    store = LocalBlobStore(tmp_path)
    listed = list(store.list())
    assert [o.key for o in listed] == [
        "a.csv",
        "b.csv",
        "c-link.csv",
        "2024-03-04/m 2.csv",
        "2024-03-04/m1.csv",
        "2024-03-04/sub/deeper/x.csv",
        "2024-03-05/z.csv",
    ]
    assert [o.size for o in listed] == [5, 5, 5, 18, 17, 27, 16]
    stat = (tmp_path / "2024-03-04/m1.csv").stat()
    assert listed[4].version == f"{stat.st_size}-{stat.st_mtime_ns}"
    assert [o.key for o in store.list("2024-03-04")] == [
        "2024-03-04/m 2.csv",
        "2024-03-04/m1.csv",
        "2024-03-04/sub/deeper/x.csv",
    ]
    assert [o.key for o in store.list("2024-03-04/sub/")] == ["2024-03-04/sub/deeper/x.csv"]
    assert list(store.list("nothing-here")) == []
    assert store.read("2024-03-04/m 2.csv") == b"2024-03-04/m 2.csv"


def test_a_listed_file_with_a_backslash_in_its_name_can_be_read_but_not_written(tmp_path):
    # A folder's listing can give a name with a backslash (a plain character on Linux); reading
    # it lets ingestion set the file aside. The parts a backslash would separate are still checked.
    (tmp_path / "a\\b.csv").write_bytes(b"kept")
    (tmp_path / "x").mkdir()
    store = LocalBlobStore(tmp_path / "x")
    outside = LocalBlobStore(tmp_path)
    assert [o.key for o in outside.list()] == ["a\\b.csv"]
    assert outside.read("a\\b.csv") == b"kept"
    for key in ["..\\a\\b.csv", "sub\\..\\..\\a\\b.csv", "\\a\\b.csv", "a\\\\b.csv"]:
        with pytest.raises(UnsafeKey):
            store.read(key)
    with pytest.raises(UnsafeKey):
        outside.write("a\\b.csv", b"x")


def test_a_name_at_the_file_systems_limit_is_written_through_a_short_temporary_name(tmp_path, monkeypatch):
    # The temporary name was the target's plus 38 bytes: past 217 bytes, ENAMETOOLONG.
    import re

    store = LocalBlobStore(tmp_path)
    name = "m" * 251 + ".csv"  # 255 bytes, the most a name can have
    temporary = []
    replace = os.replace

    def recording_replace(source, target):
        temporary.append(os.path.basename(source))
        return replace(source, target)

    monkeypatch.setattr(os, "replace", recording_replace)
    store.write(f"d/{name}", b"x")
    store.write(name, b"y")
    assert store.read(f"d/{name}") == b"x" and store.read(name) == b"y"
    assert [o.key for o in store.list()] == [name, f"d/{name}"]
    assert all(re.fullmatch(r"\.gs-[0-9a-f]{12}\.tmp", t) for t in temporary), temporary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", name]


def test_writes_made_without_an_fsync_are_readable_and_synced_at_once(tmp_path):
    LocalBlobStore(tmp_path / "never-written").sync()  # no folder yet: nothing to do
    store = LocalBlobStore(tmp_path / "lake")
    store.write("raw/files/a.csv", b"one", durable=False)
    store.write("raw/files/a.csv", b"two", durable=False)
    store.sync()
    assert store.read("raw/files/a.csv") == b"two"
    assert [o.key for o in store.list()] == ["raw/files/a.csv"]


def _direct_writes(monkeypatch) -> list[tuple[int, bool]]:
    """Records each write around the page cache: (bytes, whether the file had O_DIRECT set)."""
    import fcntl

    seen: list[tuple[int, bool]] = []
    write_direct = blobs._write_direct

    def recording(fd: int, data: bytes) -> bool:
        seen.append((len(data), bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)))
        return write_direct(fd, data)

    monkeypatch.setattr(blobs, "_write_direct", recording)
    return seen


def test_uncached_writes_go_around_the_page_cache_byte_for_byte(tmp_path, monkeypatch):
    seen = _direct_writes(monkeypatch)
    store = LocalBlobStore(tmp_path)
    mib = blobs.DIRECT_MIN_BYTES
    # Around the block alignment (4 KiB), the threshold and the 4 MiB chunk of the buffer.
    sizes = [0, 1, 4095, mib - 1, mib, mib + 1, mib + 4096, (4 << 20) - 1, 4 << 20, (4 << 20) + 5, 9 << 20]
    for size in sizes:
        data = os.urandom(size)
        store.write(f"raw/{size}.csv", data, cached=False)
        assert store.read(f"raw/{size}.csv") == data
        assert (tmp_path / "raw" / f"{size}.csv").stat().st_size == size
    assert seen == [(size, True) for size in sizes if size >= mib]
    # Cached (the default) or not durable (synced later, all at once): through the page cache.
    store.write("layers/a.parquet", os.urandom(2 * mib))
    store.write("raw/small-later.csv", os.urandom(2 * mib), durable=False, cached=False)
    assert len(seen) == len([size for size in sizes if size >= mib])
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted(
        [f"{size}.csv" for size in sizes] + ["small-later.csv"]
    )


def test_an_uncached_write_that_fails_part_way_leaves_the_previous_object(tmp_path, monkeypatch):
    store = LocalBlobStore(tmp_path)
    store.write("raw/big.csv", b"old version", cached=False)
    writes = []
    real_write = os.write

    def failing(fd, data):
        writes.append(len(data))
        if len(writes) == 2:  # the second 4 MiB chunk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(OSError, match="No space left"):
        store.write("raw/big.csv", os.urandom(9 << 20), cached=False)
    monkeypatch.undo()
    assert writes == [4 << 20, 4 << 20]
    assert store.read("raw/big.csv") == b"old version"
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["big.csv"]


def test_an_uncached_write_is_written_as_usual_where_the_file_system_refuses_o_direct(tmp_path, monkeypatch):
    import fcntl

    seen = _direct_writes(monkeypatch)
    real_fcntl = fcntl.fcntl

    def refusing(fd, cmd, *args):
        if cmd == fcntl.F_SETFL and args and args[0] & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_fcntl(fd, cmd, *args)

    monkeypatch.setattr(fcntl, "fcntl", refusing)
    store = LocalBlobStore(tmp_path)
    data = os.urandom(3 << 20)
    store.write("raw/big.csv", data, cached=False)
    assert store.read("raw/big.csv") == data
    assert seen == []


def test_an_uncached_write_refused_at_its_first_direct_write_is_written_as_usual(tmp_path, monkeypatch):
    # A file system that takes the O_DIRECT flag but wants another alignment (EINVAL on write).
    import fcntl

    real_write = os.write
    refused = []

    def picky(fd, data):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", picky)
    store = LocalBlobStore(tmp_path)
    data = os.urandom((5 << 20) + 3)
    store.write("raw/big.csv", data, cached=False)
    monkeypatch.undo()
    assert refused == [4 << 20]
    assert store.read("raw/big.csv") == data
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["big.csv"]
