"""Slices of meters: which slice a meter falls in, and layers written and read one slice at a time."""

import polars as pl
import pytest

from greenstream_assets.storage import lake
from greenstream_assets.storage.blobs import LocalBlobStore


@pytest.mark.parametrize(
    ("rows", "slice_rows", "expected"),
    [
        *((0, 600_000, 1), (1, 600_000, 1), (600_000, 600_000, 1), (600_001, 600_000, 2)),
        *((4_824_297, 600_000, 9), (384_000, 4, 64), (600_000 * 70, 600_000, 64)),
    ],
)
def test_slice_count(rows, slice_rows, expected):
    assert lake.slice_count(rows, slice_rows) == expected


def test_a_meter_falls_in_one_slice_whatever_spaces_surround_its_id():
    frame = pl.DataFrame({"meter_id": ["M1", " M1", "M1 ", "M2", None, None]})
    slices = frame.select(lake.meter_slice(7)).to_series().to_list()
    assert slices[0] == slices[1] == slices[2]
    assert slices[4] == slices[5]
    assert all(0 <= s < 7 for s in slices)
    # Many meters spread over every slice.
    many = pl.DataFrame({"meter_id": [f"MTR-{i:06d}" for i in range(10_000)]}).select(lake.meter_slice(8))
    counts = many.to_series().value_counts().sort("meter_id").get_column("count").to_list()
    assert len(counts) == 8 and min(counts) > 1_000


def test_a_layer_is_written_and_read_one_slice_per_row_group(tmp_path):
    store = LocalBlobStore(tmp_path)
    parts = [
        pl.DataFrame({"meter_id": ["A", "A"], "kw": [1.0, 2.0]}),
        pl.DataFrame(schema={"meter_id": pl.String, "kw": pl.Float64}),
        # An all-null column of another type is cast to the first slice's schema.
        pl.DataFrame({"meter_id": ["B"], "kw": [None]}),
    ]
    with lake.SliceWriter(store, "layers/x.parquet") as out:
        for part in parts:
            out.write(part)
    assert out.rows == 3
    assert lake.parquet_row_groups(store, "layers/x.parquet") == 3
    with lake.read_slices(store, "layers/x.parquet") as slices:
        got = list(slices)
    assert [frame.rows() for frame in got] == [[("A", 1.0), ("A", 2.0)], [], [("B", None)]]
    assert all(frame.schema == pl.Schema({"meter_id": pl.String, "kw": pl.Float64}) for frame in got)
    with lake.read_slices(store, "layers/x.parquet", ["kw"]) as slices:
        assert [frame.columns for frame in slices] == [["kw"]] * 3


def test_a_failed_slice_write_publishes_nothing_and_keeps_the_previous_layer(tmp_path):
    store = LocalBlobStore(tmp_path)
    with lake.SliceWriter(store, "layers/x.parquet") as out:
        out.write(pl.DataFrame({"v": [1]}))
    with pytest.raises(RuntimeError, match="boom"), lake.SliceWriter(store, "layers/x.parquet") as out:
        out.write(pl.DataFrame({"v": [2, 3]}))
        raise RuntimeError("boom")
    assert lake.read_parquet(store, "layers/x.parquet").rows() == [(1,)]
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == ["x.parquet"]


def test_a_slice_writer_with_nothing_written_refuses_to_publish(tmp_path):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError, match="nothing was written"), lake.SliceWriter(store, "layers/x.parquet"):
        pass
    assert not store.exists("layers/x.parquet")


def test_json_lines_are_written_a_slice_at_a_time_and_published_whole(tmp_path):
    store = LocalBlobStore(tmp_path)
    with lake.JsonLinesWriter(store, "q.jsonl") as out:
        out.write(pl.DataFrame({"a": [1, 2]}))
        out.write(pl.DataFrame({"a": []}, schema={"a": pl.Int64}))
        out.write(pl.DataFrame({"a": [3]}))
    assert out.rows == 3
    assert store.read("q.jsonl") == b'{"a":1}\n{"a":2}\n{"a":3}\n'
    with pytest.raises(RuntimeError), lake.JsonLinesWriter(store, "q.jsonl") as out:
        out.write(pl.DataFrame({"a": [9]}))
        raise RuntimeError
    assert store.read("q.jsonl") == b'{"a":1}\n{"a":2}\n{"a":3}\n'


def sliced_day(store, key, meters, slices, meter_slices=True):
    """A day of ``meters`` (two readings each) written as SliceWriter writes the archive."""
    frame = pl.DataFrame(
        {"meter_id": [m for m in meters for _ in range(2)], "kw": list(range(2 * len(meters)))}
    )
    frame = frame.with_columns(slice=lake.meter_slice(slices))
    with lake.SliceWriter(store, key, meter_slices=meter_slices) as out:
        for k in range(slices):
            out.write(frame.filter(pl.col("slice") == k).drop("slice"))
    return frame.drop("slice")


@pytest.mark.parametrize("today_slices", [1, 3, 5])
def test_read_meters_reads_only_the_row_groups_of_the_meters_slices_and_finds_every_row(
    tmp_path, today_slices
):
    store = LocalBlobStore(tmp_path)
    meters = [f"M{i:03d}" for i in range(40)]
    earlier = sliced_day(store, "archive/d1.parquet", meters, slices=5)
    plain = tmp_path / "plain.parquet"  # not written by SliceWriter: read whole
    earlier.write_parquet(plain, row_group_size=7)
    today = pl.DataFrame({"meter_id": meters}).with_columns(slice=lake.meter_slice(today_slices))
    for k in range(today_slices):
        wanted = today.filter(pl.col("slice") == k).get_column("meter_id")
        expected = earlier.filter(pl.col("meter_id").is_in(wanted.implode())).sort("meter_id", "kw")
        for path in (tmp_path / "archive/d1.parquet", plain):
            got = lake.read_meters([path], ["meter_id", "kw"], wanted)
            assert got.sort("meter_id", "kw").equals(expected)
    assert lake.sliced_groups(tmp_path / "archive/d1.parquet") is not None
    assert lake.sliced_groups(plain) is None
    # The footer gives each slice's row range.
    groups = lake.sliced_groups(tmp_path / "archive/d1.parquet")
    assert len(groups) == 5 and sum(rows for _, rows in groups) == 80


def test_read_meters_of_no_meter_and_of_an_unmarked_slice_file(tmp_path):
    store = LocalBlobStore(tmp_path)
    sliced_day(store, "a.parquet", ["M1", "M2"], slices=2)
    sliced_day(store, "b.parquet", ["M1", "M2"], slices=2, meter_slices=False)
    none = lake.read_meters(
        [tmp_path / "a.parquet"], ["meter_id", "kw"], pl.Series("meter_id", [], pl.String)
    )
    assert none.height == 0 and none.columns == ["meter_id", "kw"]
    assert lake.sliced_groups(tmp_path / "b.parquet") is None
    got = lake.read_meters(
        [tmp_path / "a.parquet", tmp_path / "b.parquet"], ["meter_id", "kw"], pl.Series(["M2"])
    )
    assert sorted(got.rows()) == [("M2", 2), ("M2", 2), ("M2", 3), ("M2", 3)]
    assert lake.read_meters([], ["meter_id"], pl.Series(["M2"])) is None
