"""The S3 blob store against moto's server over HTTP: listing, keys, prefixes, retries."""

import pytest

from greenstream_assets.storage.blobs import UnsafeKey
from greenstream_assets.storage.s3 import S3BlobStore, parse_s3_url
from greenstream_assets_tests.conftest import new_bucket
from greenstream_assets_tests.faults import FaultyS3Proxy


@pytest.fixture
def bucket(s3_env):
    return new_bucket(s3_env)


def store(s3_env, url):
    return S3BlobStore(url, s3_env.client)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://b", ("b", "")),
        ("s3://b/", ("b", "")),
        ("s3://b/landing", ("b", "landing/")),
        ("s3://b/a/b/", ("b", "a/b/")),
    ],
)
def test_parse_s3_url(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["s3:///x", "http://b/x", "s3://b/../x"])
def test_bad_s3_urls(url):
    with pytest.raises((ValueError, UnsafeKey)):
        parse_s3_url(url)


def test_listing_pages_past_1000_keys_and_stays_inside_the_prefix(s3_env, bucket):
    client = s3_env.client()
    for i in range(2_500):
        client.put_object(Bucket=bucket, Key=f"landing/day/{i:05d}.csv", Body=b"x" * (i % 7))
    client.put_object(Bucket=bucket, Key="landing-other/evil.csv", Body=b"x")
    client.put_object(Bucket=bucket, Key="elsewhere.csv", Body=b"x")
    listed = list(store(s3_env, f"s3://{bucket}/landing").list())
    assert len(listed) == 2_500
    assert listed[0].key == "day/00000.csv" and listed[-1].key == "day/02499.csv"
    assert [o.size for o in listed[:8]] == [0, 1, 2, 3, 4, 5, 6, 0]


def test_odd_keys_round_trip_and_unsafe_writes_are_refused(s3_env, bucket):
    lake = store(s3_env, f"s3://{bucket}/lake")
    for key in ["a b/zähler 1.csv", "x/ü€.csv", "a..b/c.csv"]:
        lake.write(key, key.encode())
        assert lake.read(key) == key.encode() and lake.exists(key)
    for key in ["../escape.csv", "/abs.csv", "a/../../b", "dir/"]:
        with pytest.raises(UnsafeKey):
            lake.write(key, b"x")
    keys = sorted(o.key for o in lake.list())
    assert keys == ["a b/zähler 1.csv", "a..b/c.csv", "x/ü€.csv"]
    all_keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(k.startswith("lake/") for k in all_keys)
    lake.delete("x/ü€.csv")
    assert not lake.exists("x/ü€.csv")


def test_a_reupload_changes_the_version_and_identical_bytes_do_not(s3_env, bucket):
    landing = store(s3_env, f"s3://{bucket}/landing")
    landing.write("a.csv", b"one")
    (first,) = landing.list()
    landing.write("a.csv", b"two")
    (second,) = landing.list()
    landing.write("a.csv", b"two")
    (third,) = landing.list()
    assert first.version != second.version == third.version


def test_throttled_gets_are_retried_by_botocore(s3_env, bucket, monkeypatch):
    from greenstream_assets.defs.resources import StorageResource

    store(s3_env, f"s3://{bucket}/landing").write("a.csv", b"payload")
    with FaultyS3Proxy(s3_env.endpoint, {"landing/a.csv": 3}) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        landing = StorageResource(landing=f"s3://{bucket}/landing").landing_store()
        assert landing.read("a.csv") == b"payload"
        assert proxy.injected["landing/a.csv"] == 3


@pytest.mark.parametrize("kind", ["local", "s3"])
@pytest.mark.parametrize("guess", [16, 64 * 1024])  # a footer read in two tail reads, or in one
def test_a_parquet_footer_is_read_from_the_objects_tail(kind, guess, s3_env, bucket, tmp_path, monkeypatch):
    import polars as pl

    from greenstream_assets.storage import lake
    from greenstream_assets.storage.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path) if kind == "local" else store(s3_env, f"s3://{bucket}/lake")
    data = bytes(range(256)) * 4
    blobs.write("bytes.bin", data)
    assert blobs.read_tail("bytes.bin", 5) == data[-5:]
    assert blobs.read_tail("bytes.bin", 10_000) == data

    frame = pl.DataFrame({"meter_id": [f"M{i}" for i in range(30_000)], "kw": [i / 7 for i in range(30_000)]})
    with lake.SliceWriter(blobs, "layer.parquet", meter_slices=True) as out:
        for k in range(3):
            out.write(frame.slice(k * 10_000, 10_000 + k))
    monkeypatch.setattr(lake, "_FOOTER_GUESS", guess)
    footer = lake.parquet_footer(blobs, "layer.parquet")
    assert (footer.num_rows, footer.num_row_groups) == (30_001, 3)
    assert [footer.row_group(g).num_rows for g in range(3)] == [10_000, 10_001, 10_000]
    assert footer.metadata[lake.METER_SLICES.encode()] == b"1"
    assert (lake.parquet_rows(blobs, "layer.parquet"), lake.parquet_row_groups(blobs, "layer.parquet")) == (
        30_001,
        3,
    )
    with pytest.raises(ValueError, match="not a Parquet file"):
        lake.parquet_footer(blobs, "bytes.bin")


class CountingStore:
    """A store that records ranged reads and refuses whole reads of packs."""

    def __init__(self, inner):
        self.inner, self.ranges = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self, key):
        assert not key.startswith("raw/packs/"), f"whole read of {key}"
        return self.inner.read(key)

    def read_to_file(self, key, path):
        raise AssertionError(f"download of {key}")

    def read_range(self, key, start, size):
        data = self.inner.read_range(key, start, size)
        self.ranges.append((start, len(data)))
        return data


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_backup_is_read_from_its_pack_by_ranges(kind, s3_env, bucket, tmp_path):
    from greenstream_assets.storage import lake
    from greenstream_assets.storage.blobs import LocalBlobStore
    from greenstream_assets_tests.test_storage.test_packs import legacy_pack

    blobs = LocalBlobStore(tmp_path) if kind == "local" else store(s3_env, f"s3://{bucket}/lake")
    big = bytes(range(256)) * 8_000  # 2 MB: the pack is ~4 MB, eight times the read buffer
    files = [("a" * 64, "2024-03-04/m1.csv", big), ("b" * 64, "2024-03-04/m2.csv", b"meter_id\nM2\n")]
    files.append(("c" * 64, "2024-03-04/m3.csv", big[::-1]))
    legacy_pack(blobs, "batch-1", files)
    counted = CountingStore(blobs)
    for checksum, key, data in files:
        assert lake.read_raw_backup(counted, checksum, key, "batch-1") == data
    # The small member costs its header and bytes plus the zip's directory, not the pack.
    counted.ranges.clear()
    assert lake.read_raw_backup(counted, "b" * 64, "2024-03-04/m2.csv", "batch-1") == b"meter_id\nM2\n"
    assert sum(n for _, n in counted.ranges) <= 3 * lake._RANGE_BUFFER < blobs.size("raw/packs/batch-1.zip")


def test_a_ranged_object_reads_and_seeks_like_a_file(tmp_path):
    import io

    from greenstream_assets.storage import lake
    from greenstream_assets.storage.blobs import LocalBlobStore

    blobs = LocalBlobStore(tmp_path)
    blobs.write("x.bin", b"0123456789")
    raw = lake.RangedObject(blobs, "x.bin")
    assert (raw.seek(-3, io.SEEK_END), raw.read(10), raw.read(1)) == (7, b"789", b"")
    assert (raw.seek(2), raw.read(3), raw.tell(), raw.seek(1, io.SEEK_CUR), raw.read(2)) == (
        2,
        b"234",
        5,
        6,
        b"67",
    )
    assert blobs.read_range("x.bin", 8, 100) == b"89"
    with pytest.raises(ValueError, match="negative seek"):
        raw.seek(-11, io.SEEK_END)


def test_dotted_names_are_listed_like_any_key(s3_env, bucket):
    # A folder store hides dotted names (its own in-flight temporary files); S3 has none, and a
    # meter's ".m2.csv" or a ".keep" marker was silently never seen.
    client = s3_env.client()
    for key in ["landing/.keep", "landing/d/.m2.csv", "landing/d/m1.csv", "landing/.d/m3.csv"]:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    keys = sorted(o.key for o in store(s3_env, f"s3://{bucket}/landing").list())
    assert keys == [".d/m3.csv", ".keep", "d/.m2.csv", "d/m1.csv"]


def test_a_read_says_whether_an_object_is_gone_unreadable_or_worth_a_retry(s3_env, bucket):
    from greenstream_assets.storage.blobs import UnreadableObject

    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="landing/cold.csv", Body=b"meter_id\n", StorageClass="GLACIER")
    landing = store(s3_env, f"s3://{bucket}/landing")
    with pytest.raises(UnreadableObject) as archived:
        landing.read("cold.csv")
    assert archived.value.reason == "archived_object"
    assert "InvalidObjectState" in archived.value.detail and "GLACIER" in archived.value.detail
    with pytest.raises(FileNotFoundError):
        landing.read("deleted.csv")


def client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} message"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("NoSuchKey", 404, "gone"),
        ("InvalidObjectState", 403, "archived_object"),
        ("AccessDenied", 403, "access_denied"),
        ("InvalidRequest", 400, "unreadable_object"),  # e.g. an SSE-C object without its key
        ("SlowDown", 503, "raised"),
        ("InternalError", 500, "raised"),
        ("RequestTimeout", 400, "raised"),
        ("ExpiredToken", 400, "raised"),  # the pipeline's credentials, not the object
        ("InvalidAccessKeyId", 403, "raised"),
        ("NoSuchBucket", 404, "raised"),
        ("TooManyRequests", 429, "raised"),
    ],
)
def test_read_errors_are_classified(code, status, outcome):
    from greenstream_assets.storage.blobs import UnreadableObject
    from greenstream_assets.storage.s3 import read_error

    err = client_error(code, status)
    result = read_error("a.csv", err)
    if outcome == "gone":
        assert isinstance(result, FileNotFoundError)
    elif outcome == "raised":
        assert result is err
    else:
        assert isinstance(result, UnreadableObject)
        assert (result.key, result.reason) == ("a.csv", outcome)
        assert result.detail == f"S3 GetObject: {code}: {code} message"
