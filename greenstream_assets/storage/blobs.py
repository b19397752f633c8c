"""Where bytes go: the landing zone and the lake, behind one interface (local folder now, S3 next).

Keys are always relative, ``/``-separated and checked: no key can reach outside the store's root.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol


class UnsafeKey(ValueError):
    """A key that could escape the store's root (absolute, ``..``, backslash, NUL)."""


class UnreadableObject(Exception):
    """An object that exists but that no retry will read: archived (S3 Glacier), access denied,
    encrypted with a key the pipeline lacks. ``reason`` names the kind, ``detail`` the store's
    words. A store raises ``FileNotFoundError`` for an object gone since it was listed, and lets
    transient errors (throttling, 5xx, connection resets) through as they are."""

    def __init__(self, key: str, reason: str, detail: str) -> None:
        super().__init__(f"{key!r}: {detail}")
        self.key, self.reason, self.detail = key, reason, detail


def check_key(key: str) -> str:
    # Between slashes added at both ends, an empty, "." or ".." part (a leading or trailing slash
    # included) shows as "//", "/./" or "/../": substring tests, as a day of 50,000 per-meter files
    # checks 100,000 keys.
    bounded = f"/{key}/"
    if not key or "\\" in key or "\x00" in key or "//" in bounded or "/./" in bounded or "/../" in bounded:
        raise UnsafeKey(f"unsafe object key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # Changes whenever the content may have changed: ETag on S3, size + mtime on a folder.
    version: str


class BlobStore(Protocol):
    url: str
    # Threads that keep the store busy when many objects are read or written at once (ingestion).
    io_workers: int

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def read(self, key: str) -> bytes:
        """The object's bytes. ``FileNotFoundError`` when it is gone, ``UnreadableObject`` when it
        is there but cannot be read, anything else when a retry may succeed."""

    def read_tail(self, key: str, size: int) -> bytes:
        """The last ``size`` bytes of an object (all of it when it is smaller): a Parquet footer
        without the rest of the file."""

    def read_range(self, key: str, start: int, size: int) -> bytes:
        """``size`` bytes of an object from offset ``start`` (fewer at its end): one member of a
        zip, one Parquet row group."""

    def size(self, key: str) -> int:
        """The object's length in bytes."""

    def write(self, key: str, data: bytes, *, durable: bool = True, cached: bool = True) -> None:
        """Atomic: a reader sees the previous object or the new one, never a part. Durable when it
        returns, or (``durable=False``: many small objects, as a day's raw backups) once ``sync``
        has returned. ``cached=False``: the object is written once and seldom read (a raw backup),
        so a store that can need not keep its bytes in memory (see ``LocalBlobStore``)."""

    def sync(self) -> None:
        """Make every write so far durable, those made with ``durable=False`` included."""

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def read_to_file(self, key: str, path: Path) -> None:
        """Copy an object to a local file without holding it in memory."""

    def write_file(self, key: str, path: Path) -> None:
        """Publish a local file as ``key``, atomically (as ``write``). The file is handed over: it
        may be moved into the store, so the caller must not use it afterwards."""


def _find_syncfs() -> Callable[[int], int] | None:
    """Linux's syncfs(2) (glibc), which Python's os module lacks."""
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _find_syncfs()

# The name of a temporary file beside its target, before its 12 random hex digits and ".tmp".
TEMP_PREFIX = ".gs-"

# A durable write of at least this many bytes with ``cached=False`` goes around the page cache
# (O_DIRECT, Linux): the kernel copies no page of it into fresh page-cache memory, which cost
# ~0.45 s of system time for a day's 190 MB of raw backups here (~0.14 s direct, with the fsync
# they have anyway). What is read back soon (staged rows, layers) stays cached.
DIRECT_MIN_BYTES = 1 << 20
# O_DIRECT wants the buffer, the length and the file offset aligned to the device's blocks: 4 KiB
# covers every device here. Bytes go out through a page-aligned buffer of this size per thread.
_DIRECT_ALIGN = 4096
_DIRECT_CHUNK = 4 << 20
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_direct_buffers = threading.local()


def _direct_buffer() -> mmap.mmap:
    buffer = getattr(_direct_buffers, "buffer", None)
    if buffer is None:
        buffer = _direct_buffers.buffer = mmap.mmap(-1, _DIRECT_CHUNK)
    return buffer


def _write_direct(fd: int, data: bytes) -> bool:
    """``data`` to a file opened with O_DIRECT at offset 0, then cut to its length: each chunk
    goes through the thread's aligned buffer, the last one padded to the alignment. False, with
    nothing written, when the file system refuses the first write (EINVAL: it wants another
    alignment, as some FUSE and network file systems do)."""
    buffer = _direct_buffer()
    view = memoryview(buffer)
    source = memoryview(data)
    try:
        for start in range(0, len(data), _DIRECT_CHUNK):
            chunk = source[start : start + _DIRECT_CHUNK]
            buffer[: len(chunk)] = chunk
            length = -(-len(chunk) // _DIRECT_ALIGN) * _DIRECT_ALIGN
            if length > len(chunk):
                buffer[len(chunk) : length] = bytes(length - len(chunk))
            written = 0
            while written < length:
                try:
                    done = os.write(fd, view[written:length])
                except OSError as err:
                    if err.errno == errno.EINVAL and start == 0 and written == 0:
                        return False
                    raise
                if done <= 0 or done % _DIRECT_ALIGN:
                    raise OSError(errno.EIO, f"direct write of {length - written} bytes wrote {done}")
                written += done
        if len(data) % _DIRECT_ALIGN:
            os.ftruncate(fd, len(data))
        return True
    finally:
        view.release()
        source.release()


def _set_direct(fd: int, on: bool) -> bool:
    """Turn O_DIRECT on or off for ``fd``; whether it is now as asked (False where the platform
    has no O_DIRECT, or the file system refuses it)."""
    if not _O_DIRECT:
        return not on
    import fcntl  # POSIX only, as O_DIRECT

    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, (flags | _O_DIRECT) if on else (flags & ~_O_DIRECT))
        return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & _O_DIRECT) == on
    except OSError:
        return False


class LocalBlobStore:
    """A folder as a blob store; writes go to a temporary file and are renamed into place."""

    # A file's read is a quick system call among Python work that holds the GIL: more threads than
    # this only contend for it. Ingesting 50,000 per-meter files took 8.2-8.7 s on 8-16 threads
    # and 6.2-7.0 s on 2-4; 24 batch files 1.34-1.38 s on 4 and 1.44-1.47 s on 16.
    io_workers = 4

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``: a folder's files by name, then its subfolders by name
        (as ``os.walk`` goes, top down, not into linked folders), hidden names (in-flight
        temporary files) left out. Plain strings and ``os.scandir``: a landing zone of 50,000
        per-meter files is listed at every ingestion."""
        base = os.path.join(self.url, prefix) if prefix else self.url
        if not os.path.isdir(base):
            return
        yield from self._list_folder(base, os.path.relpath(base, self.url).replace(os.sep, "/"))

    def _list_folder(self, folder: str, key_prefix: str) -> Iterator[ObjectInfo]:
        files, folders = [], []
        try:
            entries = os.scandir(folder)
        except OSError:  # gone since it was listed, or unreadable: skipped, as os.walk does
            return
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    if not entry.is_symlink():
                        folders.append(entry)
                else:
                    files.append(entry)
        lead = "" if key_prefix == "." else key_prefix + "/"
        for entry in sorted(files, key=lambda e: e.name):
            stat = entry.stat()
            yield ObjectInfo(lead + entry.name, stat.st_size, f"{stat.st_size}-{stat.st_mtime_ns}")
        for entry in sorted(folders, key=lambda e: e.name):
            yield from self._list_folder(entry.path, lead + entry.name)

    def read(self, key: str) -> bytes:
        # A backslash is a plain character of a file's name here, and the folder's own listing can
        # give one (a landing file named a\b.csv): read, it is checked as a separator would be
        # (..\x is still refused), so ingestion can set such a file aside instead of failing on it.
        # A plain string path and an unbuffered read: 50,000 small files a day.
        check_key(key.replace("\\", "/"))
        try:
            with open(f"{self.url}/{key}", "rb", buffering=0) as handle:
                return handle.readall()
        except (IsADirectoryError, NotADirectoryError) as err:
            # A folder now where the file was listed, or a file where its folder was: gone.
            raise FileNotFoundError(err.errno, err.strerror, err.filename) from err
        except PermissionError as err:
            raise UnreadableObject(key, "access_denied", str(err)) from err

    def read_tail(self, key: str, size: int) -> bytes:
        with self._path(key).open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read()

    def read_range(self, key: str, start: int, size: int) -> bytes:
        with self._path(key).open("rb") as handle:
            handle.seek(start)
            return handle.read(size)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def _publish(
        self, key: str, fill: Callable[[BinaryIO], object], durable: bool = True, direct: bytes | None = None
    ) -> None:
        """Write through ``fill`` to a temporary file beside the target, then rename it into place
        (with an fsync first when ``durable``). ``direct``: the bytes to write around the page
        cache instead (see ``DIRECT_MIN_BYTES``), through ``fill`` where the file system refuses."""
        path = self._path(key)
        # A name no other writer uses, created exclusively, of a fixed length: a target whose name
        # is near the file system's limit (255 bytes) still has a temporary name. Hidden, so
        # never listed. The folder is made only when missing: mkdir takes the parent folder's
        # lock even when the folder exists.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        made = False
        while True:
            tmp = f"{path.parent}/{TEMP_PREFIX}{uuid.uuid4().hex[:12]}.tmp"
            try:
                fd = os.open(tmp, flags, 0o600)
                break
            except FileNotFoundError:
                if made:
                    raise
                path.parent.mkdir(parents=True, exist_ok=True)
                made = True
            except FileExistsError:
                pass  # another writer's name (48 random bits): draw again
        try:
            if direct is not None and _set_direct(fd, True):
                try:
                    if not _write_direct(fd, direct):
                        # Refused after all: written as any other (nothing was written yet).
                        if not _set_direct(fd, False):
                            raise OSError(errno.EIO, f"cannot turn O_DIRECT off for {tmp}")
                        os.ftruncate(fd, 0)
                        os.lseek(fd, 0, os.SEEK_SET)
                        with os.fdopen(fd, "wb", closefd=False) as handle:
                            fill(handle)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
                return
            with os.fdopen(fd, "wb") as handle:
                fill(handle)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write(self, key: str, data: bytes, *, durable: bool = True, cached: bool = True) -> None:
        direct = data if durable and not cached and len(data) >= DIRECT_MIN_BYTES else None
        self._publish(key, lambda handle: handle.write(data), durable, direct)

    def sync(self) -> None:
        """One ``syncfs`` of the folder's file system, where a day of 50,000 per-meter backups
        would wait for an fsync (a journal commit) each; ``os.sync`` where there is no syncfs.
        Ingesting 20,000 per-meter files took 5.2-14.7 s so, 8.9-15.5 s with an fsync each
        (on this 2-core VM, creating the files costs most of it)."""
        try:
            fd = os.open(self.url, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # nothing written yet
            return
        try:
            if _syncfs is None:
                os.sync()
            elif _syncfs(fd) != 0:
                code = ctypes.get_errno()
                raise OSError(code, f"syncfs of {self.url}: {os.strerror(code)}")
        finally:
            os.close(fd)

    def read_to_file(self, key: str, path: Path) -> None:
        shutil.copyfile(self._path(key), path)

    def local_path(self, key: str) -> Path:
        """The object's own file (read it, never write to it)."""
        return self._path(key)

    def write_file(self, key: str, path: Path) -> None:
        """Renamed into place when ``path`` is on the store's file system (a step's temporary file
        usually is): no second copy of the bytes. Otherwise copied, as ``write``."""
        target = self._path(key)
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
        try:
            try:
                os.replace(path, target)
            except FileNotFoundError:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            with open(path, "rb") as source:
                self._publish(key, lambda handle: shutil.copyfileobj(source, handle, 1 << 20))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


def open_blob_store(url: str, s3_client_factory: Callable[[], Any] | None = None) -> BlobStore:
    """A store for ``s3://bucket/prefix`` (with a boto3 client from ``s3_client_factory``), or for a
    folder path / ``file://`` URL."""
    if url.startswith("s3://"):
        from greenstream_assets.storage.s3 import S3BlobStore

        if s3_client_factory is None:
            raise ValueError(f"{url} needs an S3 client factory")
        return S3BlobStore(url, s3_client_factory)
    return LocalBlobStore(url.removeprefix("file://"))
