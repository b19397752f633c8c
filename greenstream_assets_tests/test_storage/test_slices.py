"""Slices of meters: which slice a meter falls in, and layers written and read one slice at a time."""

import threading
import time
from datetime import date

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


# Parquet (published layers) and Arrow IPC (hand-over layers between steps) behave the same.
LAYER_KEYS = pytest.mark.parametrize("key", ["layers/x.parquet", "layers/x.arrow"])


@LAYER_KEYS
def test_a_layer_is_written_and_read_one_slice_per_row_group(tmp_path, key):
    store = LocalBlobStore(tmp_path)
    parts = [
        pl.DataFrame({"meter_id": ["A", "A"], "kw": [1.0, 2.0]}),
        pl.DataFrame(schema={"meter_id": pl.String, "kw": pl.Float64}),
        # An all-null column of another type is cast to the first slice's schema.
        pl.DataFrame({"meter_id": ["B"], "kw": [None]}),
        # A frame in several chunks is still one slice.
        pl.concat(
            [pl.DataFrame({"meter_id": ["C"], "kw": [3.0]}), pl.DataFrame({"meter_id": ["D"], "kw": [4.0]})],
            rechunk=False,
        ),
    ]
    assert parts[3].n_chunks() == 2
    with lake.SliceWriter(store, key) as out:
        for part in parts:
            out.write(part)
    assert out.rows == 5
    assert lake.layer_slices(store, key) == 4
    with lake.read_slices(store, key) as slices:
        got = list(slices)
    assert [frame.rows() for frame in got] == [
        [("A", 1.0), ("A", 2.0)],
        [],
        [("B", None)],
        [("C", 3.0), ("D", 4.0)],
    ]
    assert all(frame.schema == pl.Schema({"meter_id": pl.String, "kw": pl.Float64}) for frame in got)
    with lake.read_slices(store, key, ["kw"]) as slices:
        assert [frame.columns for frame in slices] == [["kw"]] * 4
    # Columns come in the order asked for, not the file's.
    with lake.read_slices(store, key, ["kw", "meter_id"]) as slices:
        assert [frame.rows() for frame in slices][0] == [(1.0, "A"), (2.0, "A")]
    with pytest.raises(pl.exceptions.ColumnNotFoundError), lake.read_slices(store, key, ["nope"]) as slices:
        list(slices)
    assert lake.read_layer(store, key).rows() == [("A", 1.0), ("A", 2.0), ("B", None), ("C", 3.0), ("D", 4.0)]


@LAYER_KEYS
def test_a_layer_of_one_empty_slice_reads_back_as_one_empty_frame(tmp_path, key):
    store = LocalBlobStore(tmp_path)
    with lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame(schema={"meter_id": pl.String, "kw": pl.Float64}))
    with lake.read_slices(store, key) as slices:
        got = list(slices)
    assert [(frame.height, frame.schema) for frame in got] == [
        (0, pl.Schema({"meter_id": pl.String, "kw": pl.Float64}))
    ]


def test_an_arrow_file_without_batches_reads_back_as_one_empty_frame(tmp_path):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    schema = pa.schema([("meter_id", pa.string_view()), ("kw", pa.float64())])
    with ipc.new_file(str(tmp_path / "x.arrow"), schema):
        pass
    with lake.read_slices(LocalBlobStore(tmp_path), "x.arrow", ["kw"]) as slices:
        got = list(slices)
    assert [(frame.height, frame.schema) for frame in got] == [(0, pl.Schema({"kw": pl.Float64}))]


@LAYER_KEYS
def test_a_failed_slice_write_publishes_nothing_and_keeps_the_previous_layer(tmp_path, key):
    store = LocalBlobStore(tmp_path)
    with lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [1]}))
    with pytest.raises(RuntimeError, match="boom"), lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [2, 3]}))
        raise RuntimeError("boom")
    assert lake.read_layer(store, key).rows() == [(1,)]
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == [key.removeprefix("layers/")]


@LAYER_KEYS
def test_a_slice_writer_publishes_a_copy_at_once_and_its_own_key_when_the_block_ends(tmp_path, key):
    """One file, two objects (the cleansed and the flagged layer): the copy is published where the
    block says, the writer's own key when the block ends, and each keeps its version after."""
    store = LocalBlobStore(tmp_path)
    copy = key.replace("/x.", "/y.")
    with lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [1]}))
        out.write(pl.DataFrame({"v": [2]}))
        with lake.published_copy(out, copy):
            pass
        assert lake.read_layer(store, copy).rows() == [(1,), (2,)]
        assert not store.exists(key)
        with pytest.raises(ValueError, match="finished"):
            out.write(pl.DataFrame({"v": [3]}))
    assert lake.read_layer(store, key).rows() == [(1,), (2,)]
    with lake.read_slices(store, copy) as slices:
        assert [frame.rows() for frame in slices] == [[(1,)], [(2,)]]
    # A new version of one object leaves the other as it was.
    with lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [9]}))
    assert lake.read_layer(store, copy).rows() == [(1,), (2,)]
    # The block fails after the copy: the copy is published, the writer's own key keeps its version.
    with pytest.raises(RuntimeError, match="boom"), lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [5]}))
        with lake.published_copy(out, copy):
            pass
        raise RuntimeError("boom")
    assert (lake.read_layer(store, copy).rows(), lake.read_layer(store, key).rows()) == ([(5,)], [(9,)])
    # It fails before: neither is published.
    with pytest.raises(RuntimeError, match="boom"), lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [6]}))
        with lake.published_copy(out, copy):
            raise RuntimeError("boom")
    assert (lake.read_layer(store, copy).rows(), lake.read_layer(store, key).rows()) == ([(5,)], [(9,)])
    assert sorted(p.name for p in (tmp_path / "layers").iterdir()) == sorted(
        k.removeprefix("layers/") for k in (key, copy)
    )
    # Nothing written: no copy either.
    with (
        pytest.raises(ValueError, match="nothing was written"),
        lake.SliceWriter(store, "layers/z.arrow") as out,
    ):
        out.publish_copy("layers/w.arrow")
    assert not store.exists("layers/w.arrow")


def test_the_hand_over_layers_are_arrow_files_and_the_rest_parquet(tmp_path):
    day = date(2024, 3, 4)
    for layer in ("cleansed_readings", "flagged_anomalies"):
        assert lake.layer_key(layer, day) == f"layers/{layer}/date=2024-03-04.arrow"
    for layer in ("faulty_periods", "faulty_incidents"):
        assert lake.layer_key(layer, day) == f"layers/{layer}/date=2024-03-04.parquet"
    store = LocalBlobStore(tmp_path)
    key = lake.layer_key("flagged_anomalies", day)
    with lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [1]}))
    assert (tmp_path / key).read_bytes()[:6] == b"ARROW1"
    assert lake.is_arrow(tmp_path / key)
    # Only Parquet footers carry the meter-slice mark read_meters reads.
    with pytest.raises(ValueError, match="meter_slices"):
        lake.SliceWriter(store, key, meter_slices=True)


def test_a_lake_written_before_the_arrow_layers_is_read_from_its_parquet_layer(tmp_path):
    """An existing lake keeps its Parquet hand-over layers: a step re-run alone on such a day reads
    them; once the layer is rewritten as Arrow, the Arrow file is read."""
    store = LocalBlobStore(tmp_path)
    key = lake.layer_key("cleansed_readings", date(2024, 3, 4))
    legacy = key.removesuffix(".arrow") + ".parquet"
    with lake.SliceWriter(store, legacy) as out:
        out.write(pl.DataFrame({"v": [1]}))
        out.write(pl.DataFrame({"v": [2]}))
    assert lake.handover_key(store, key) == legacy
    with lake.read_slices(store, key) as slices:
        assert [frame.rows() for frame in slices] == [[(1,)], [(2,)]]
    assert lake.read_layer(store, key).rows() == [(1,), (2,)]
    with lake.SliceWriter(store, key) as out:
        out.write(pl.DataFrame({"v": [3]}))
    assert lake.handover_key(store, key) == key
    assert lake.read_layer(store, key).rows() == [(3,)]
    # Neither: the Arrow key, whose read fails as any missing layer's would.
    assert (
        lake.handover_key(store, "layers/none/date=2024-03-04.arrow") == "layers/none/date=2024-03-04.arrow"
    )


@LAYER_KEYS
def test_a_slice_writer_with_nothing_written_refuses_to_publish(tmp_path, key):
    store = LocalBlobStore(tmp_path)
    with pytest.raises(ValueError, match="nothing was written"), lake.SliceWriter(store, key):
        pass
    assert not store.exists(key)


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


def test_mapped_works_on_two_items_at_once_and_gives_results_in_the_items_order():
    running, most, lock = [0], [0], threading.Lock()
    # Both workers must be inside fn together to pass the barrier: it breaks (and the test fails)
    # should the items be worked on one after the other.
    together = threading.Barrier(2, timeout=10)

    def work(item: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        if item < 2:
            together.wait()
        # Later items finish first: the order must still be the items'.
        time.sleep(0.02 * (5 - item))
        with lock:
            running[0] -= 1
        return item * 10

    with lake.mapped(work, range(5)) as results:
        assert list(results) == [0, 10, 20, 30, 40]
    assert most[0] == 2


def test_mapped_raises_an_items_error_where_its_result_would_come():
    def work(item: int) -> int:
        if item == 2:
            raise ValueError("slice 2 is broken")
        return item

    got = []
    with pytest.raises(ValueError, match="slice 2 is broken"), lake.mapped(work, range(6)) as results:
        for result in results:
            got.append(result)
    assert got == [0, 1]


def test_leaving_mapped_early_starts_no_more_items_and_waits_for_those_running():
    pulled, finished = [], []

    def items():
        for item in range(10):
            pulled.append(item)
            yield item

    def work(item: int) -> int:
        time.sleep(0.05)
        finished.append(item)
        return item

    with lake.mapped(work, items()) as results:
        assert next(results) == 0
    # Item 1 was submitted beside item 0; nothing after it was pulled, and it has finished.
    assert pulled == [0, 1]
    assert sorted(finished) == [0, 1]


def test_mapped_over_no_items_gives_no_results():
    with lake.mapped(lambda item: item, []) as results:
        assert list(results) == []


def test_one_behind_runs_calls_in_order_one_behind_the_caller_and_raises_their_errors():
    done, gate = [], threading.Event()

    def first() -> None:
        gate.wait(10)
        done.append(1)

    with lake.OneBehind("test") as behind:
        behind.submit(first)
        # The caller goes on while the call runs...
        assert done == []
        gate.set()
        # ...and the next call waits for it.
        behind.submit(done.append, 2)
        assert done[0] == 1
    assert done == [1, 2]

    def broken() -> None:
        raise ValueError("row group 3 could not be written")

    behind = lake.OneBehind("test")
    behind.submit(broken)
    with pytest.raises(ValueError, match="row group 3"):
        behind.submit(done.append, 3)
    behind.close()
    assert done == [1, 2]
    behind.submit(broken)
    with pytest.raises(ValueError, match="row group 3"):
        behind.close()
