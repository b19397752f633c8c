"""Rule 6: a meter file is read whole (text columns, line numbers) or rejected whole with a reason."""

from __future__ import annotations

import random

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from greenstream_assets.rules import files
from greenstream_assets.rules.config import REQUIRED_COLUMNS as REQUIRED
from greenstream_assets.rules.config import RulesConfig
from greenstream_assets.rules.files import (
    RejectedFile,
    check_bytes,
    check_text,
    read_meter_file,
    read_meter_files,
    read_meter_text,
    simple_body,
)
from greenstream_assets.rules.validation import validate_readings

from .helpers import RAW_SCHEMA, raw_frame

HEADER = b"meter_id,timestamp,energy_value,energy_unit\n"


def rejected(data: bytes) -> RejectedFile:
    with pytest.raises(RejectedFile) as info:
        read_meter_file(data, "f.csv")
    return info.value


def test_reads_text_columns_and_line_numbers() -> None:
    data = HEADER + b"m1,2024-06-03T08:00:00Z,1.50,kW\nm2,2024-06-03 08:15,007,W\nm3,,,\n"
    expected = raw_frame(
        [
            ("m1", "2024-06-03T08:00:00Z", "1.50", "kW"),
            ("m2", "2024-06-03 08:15", "007", "W"),
            ("m3", None, None, None),
        ],
        source_file="landing/2024-06-03/f.csv",
    )
    assert_frame_equal(read_meter_file(data, "landing/2024-06-03/f.csv"), expected)


def test_schema_is_all_text_plus_provenance() -> None:
    frame = read_meter_file(HEADER + b"1,2,3,4\n", "f.csv")
    assert dict(frame.schema) == RAW_SCHEMA
    assert frame.rows() == [("1", "2", "3", "4", "f.csv", 2)]


@pytest.mark.parametrize(
    "header",
    [
        b"energy_unit,energy_value,timestamp,meter_id",
        b"timestamp,meter_id,energy_unit,energy_value",
        b" Meter_ID , TIMESTAMP ,Energy_Value,  energy_UNIT ",
        b"extra1,energy_unit,EXTRA2,energy_value,timestamp,notes,meter_id",
    ],
)
def test_columns_in_any_order_case_and_spaces_extra_dropped(header: bytes) -> None:
    names = [name.strip().lower().decode() for name in header.split(b",")]
    values = {"meter_id": "m1", "timestamp": "2024-06-03T08:00:00Z", "energy_value": "2", "energy_unit": "kW"}
    line = ",".join(values.get(name, f"x-{name}") for name in names).encode()
    frame = read_meter_file(header + b"\n" + line + b"\n", "f.csv")
    assert_frame_equal(frame, raw_frame([("m1", "2024-06-03T08:00:00Z", "2", "kW")], source_file="f.csv"))


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        (b"timestamp,energy_value,energy_unit", "meter_id"),
        (b"meter_id,energy_value,energy_unit", "timestamp"),
        (b"meter_id,timestamp,energy_unit", "energy_value"),
        (b"meter_id,timestamp,energy_value", "energy_unit"),
        (b"meter_id,timestamp,energy_value,unit", "energy_unit"),
        (b"meter id,timestamp,energy_value,energy_unit", "meter_id"),
        (b"a,b,c,d", "meter_id"),
    ],
)
def test_missing_columns(header: bytes, missing: str) -> None:
    error = rejected(header + b"\n1,2,3,4\n")
    assert error.reason == "missing_columns"
    assert missing in error.detail


def test_missing_columns_lists_all() -> None:
    error = rejected(b"meter_id,timestamp\nm1,t\n")
    assert error.reason == "missing_columns"
    assert "energy_value" in error.detail
    assert "energy_unit" in error.detail


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\n", id="newline"),
        pytest.param(b"  \r\n\n \t", id="whitespace"),
        pytest.param(HEADER, id="header_only"),
        pytest.param(HEADER.rstrip(b"\n"), id="header_only_no_newline"),
        pytest.param(HEADER.replace(b"\n", b"\r\n"), id="header_only_crlf"),
        pytest.param(HEADER + b"\n\n", id="header_and_empty_lines"),
        pytest.param(HEADER.replace(b"\n", b"\r\n") + b"\r\n", id="header_and_empty_line_crlf"),
        pytest.param(b"\xef\xbb\xbf", id="byte_order_mark_only"),
        pytest.param(b"\xef\xbb\xbf\r\n", id="byte_order_mark_and_newline"),
    ],
)
def test_empty_file(data: bytes) -> None:
    assert rejected(data).reason == "empty_file"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x00\x01\x02\x03", id="binary"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(64), id="png"),
        pytest.param(HEADER + b"\x00" * 40 + b"\xff\xfe", id="nuls_and_bad_utf8"),
    ],
)
def test_not_text(data: bytes) -> None:
    assert rejected(data).reason == "not_text"


@pytest.mark.parametrize(("control", "reason"), [(30_000, None), (30_001, "not_text")])
def test_control_bytes_are_counted_over_the_whole_of_a_large_file(control: int, reason: str | None) -> None:
    # 3,000,000 bytes, counted a mebibyte at a time: the file is binary above 1 % control bytes
    # (30,000), wherever they are, so one NUL in every chunk's share decides it.
    line = HEADER.replace(b"\n", b"\r\n")
    filler = b"m1,2024-06-03T08:00:00Z,1.5,kW\t\n"
    body = bytearray(line + filler * ((3_000_000 - len(line)) // len(filler)))
    body += b"x" * (3_000_000 - len(body))
    step = len(body) // control
    for i in range(control):
        body[len(line) + i * step] = 0
    data = bytes(body)
    assert len(data) == 3_000_000
    if reason is None:
        assert check_bytes(data) == data
    else:
        with pytest.raises(RejectedFile) as info:
            check_bytes(data)
        assert info.value.reason == reason


def test_a_stray_nul_in_a_text_file_is_a_bad_value_not_a_bad_file() -> None:
    rows = read_meter_file(
        HEADER + b"m1,2024-06-03T08:00:00Z,1\x00,kW\nm2,2024-06-03T08:00:00Z,2,kW\n", "f.csv"
    )
    assert rows.get_column("energy_value").to_list() == ["1\x00", "2"]
    validated = validate_readings(rows, RulesConfig(), None)
    assert validated.quarantined.get_column("reason").to_list() == ["invalid_value"]
    assert validated.cleansed.get_column("meter_id").to_list() == ["m2"]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEADER + "m1,2024-06-03T08:00:00Z,1,k\u00e9\n".encode("latin-1"), id="latin1"),
        pytest.param(HEADER + b"m1,2024-06-03T08:00:00Z,\xff\xfe,kW\n", id="invalid_bytes"),
        pytest.param(HEADER + b"m1,2024-06-03T08:00:00Z,1,kW\xe2\x82\n", id="truncated_sequence"),
    ],
)
def test_bad_encoding(data: bytes) -> None:
    assert rejected(data).reason == "bad_encoding"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_a_byte_order_mark_is_a_wrong_encoding_not_binary(encoding: str) -> None:
    data = "\ufeff".encode(encoding) if encoding != "utf-16" else b""
    data += (HEADER + b"m1,2024-06-03T08:00:00Z,1,kW\n").decode().encode(encoding)
    error = rejected(data)
    assert (error.reason, error.detail) == (
        "bad_encoding",
        "UTF-16 text (byte-order mark); files must be UTF-8",
    )


@pytest.mark.parametrize(
    ("data", "meters", "lines"),
    [
        pytest.param(HEADER + b"m1,t,1,kW\n\n\n", ["m1"], [2], id="trailing_empty_lines"),
        pytest.param(HEADER + b"\nm1,t,1,kW\n\nm2,t,2,kW", ["m1", "m2"], [3, 5], id="empty_lines_between"),
        pytest.param(
            (HEADER + b"m1,t,1,kW\n\nm2,t,2,kW\n").replace(b"\n", b"\r\n"),
            ["m1", "m2"],
            [2, 4],
            id="crlf_empty_line",
        ),
        pytest.param(b"\n\n" + HEADER + b"m1,t,1,kW\n", ["m1"], [4], id="empty_lines_before_the_header"),
        pytest.param(
            HEADER + b"m1,t,1,kW\n,,,\n\n", ["m1", None], [2, 3], id="a_row_of_empty_fields_is_a_row"
        ),
        pytest.param(HEADER + b'm1,t,"1\n",kW\nm2,t,2,kW\n', ["m1", "m2"], [2, 4], id="a_quoted_line_break"),
        pytest.param(
            b"\n" + HEADER + b'm1,"a\r\n\r\nb",kW,x\r\n\r\n,,,\r\nm2,t,2,kW',
            ["m1", None, "m2"],
            [3, 7, 8],
            id="quoted_empty_line_and_empty_lines",
        ),
    ],
)
def test_rows_are_numbered_by_the_line_they_start_on_and_empty_lines_are_no_rows(
    data: bytes, meters: list[str | None], lines: list[int]
) -> None:
    rows = read_meter_file(data, "f.csv")
    assert rows.select("meter_id", "line_number").rows() == list(zip(meters, lines, strict=True))


def test_an_extra_column_spelled_like_a_required_one_is_ignored() -> None:
    rows = read_meter_file(
        b"meter_id,timestamp,energy_value,energy_unit,Meter_ID\nm1,2024-06-03T08:00:00Z,1,kW,x\n", "f.csv"
    )
    assert rows.select(REQUIRED).rows() == [("m1", "2024-06-03T08:00:00Z", "1", "kW")]
    # Two spellings, neither exactly the required name: which one is meant is unknown.
    error = rejected(b"METER_ID,timestamp,energy_value,energy_unit,Meter_Id\nm1,t,1,kW,x\n")
    assert (error.reason, error.detail) == ("ambiguous_columns", "column meter_id given more than once")


def test_rejected_file_is_a_value_error_with_reason() -> None:
    error = rejected(b"")
    assert isinstance(error, ValueError)
    assert str(error).startswith("empty_file")


def test_utf8_bom_and_non_ascii_text() -> None:
    data = b"\xef\xbb\xbf" + HEADER + "z\u00e4hler-1,2024-06-03T08:00:00Z,1,kW\n".encode()
    frame = read_meter_file(data, "f.csv")
    assert frame.columns[:4] == ["meter_id", "timestamp", "energy_value", "energy_unit"]
    assert frame.get_column("meter_id").to_list() == ["z\u00e4hler-1"]


@pytest.mark.parametrize(
    ("data", "text"),
    [
        pytest.param(HEADER + b"m1,t,1,kW\n", HEADER + b"m1,t,1,kW\n", id="ascii"),
        pytest.param(b"\xef\xbb\xbf" + HEADER + b"m1,t,1,kW\n", HEADER + b"m1,t,1,kW\n", id="bom"),
        pytest.param(
            HEADER + "z\u00e4hler,t,1,kW\n".encode(), HEADER + "z\u00e4hler,t,1,kW\n".encode(), id="utf8"
        ),
    ],
)
def test_checked_bytes_are_utf8_without_a_bom(data: bytes, text: bytes) -> None:
    assert check_bytes(data) == text
    assert check_text(data) == text.decode()
    # Large files go to the parser as these bytes: the same rows as from the decoded text.
    assert_frame_equal(
        read_meter_text(check_bytes(data), "f.csv"), read_meter_text(check_text(data), "f.csv")
    )


@pytest.mark.parametrize("data", [b" \n\t\r\n", b"", b"\x0b\x0c"])
def test_whitespace_only_is_an_empty_file(data: bytes) -> None:
    with pytest.raises(RejectedFile, match="empty_file"):
        check_bytes(data)


def test_crlf_line_endings() -> None:
    data = HEADER.replace(b"\n", b"\r\n") + b"m1,t1,1,kW\r\nm2,t2,2,W\r\n"
    assert_frame_equal(
        read_meter_file(data, "f.csv"),
        raw_frame([("m1", "t1", "1", "kW"), ("m2", "t2", "2", "W")], source_file="f.csv"),
    )


def test_values_are_not_trimmed_or_typed() -> None:
    frame = read_meter_file(HEADER + b" m1 , 2024-06-03T08:00:00Z ,1e3, kW \n", "f.csv")
    assert frame.rows() == [(" m1 ", " 2024-06-03T08:00:00Z ", "1e3", " kW ", "f.csv", 2)]


def test_line_numbers_start_at_two() -> None:
    data = HEADER + b"".join(f"m{i},t,{i},kW\n".encode() for i in range(5))
    assert read_meter_file(data, "f.csv").get_column("line_number").to_list() == [2, 3, 4, 5, 6]


PLAIN = [
    (
        b"meter_id,timestamp,energy_value,energy_unit\nM1,2024-03-04T00:00:00Z,1.5,kW\nM1,2024-03-04T00:15:00Z,,kW\n",
        "a.csv",
    ),
    # No newline at the end; a short row and a long one; spaces kept as sent.
    (b"meter_id,timestamp,energy_value,energy_unit\n M2 ,2024-03-04T00:00:00Z\nM2,x,2,W,extra", "dir/b.csv"),
    (b"\xef\xbb\xbfmeter_id,timestamp,energy_value,energy_unit\nM3,t,3,kW\n", "c.csv"),
    # Empty quoted fields, as CSV writers send an empty text.
    (b'meter_id,timestamp,energy_value,energy_unit\nM4,t,4,""\n"",t,,kW\nM4,t,5,""', "d.csv"),
]


def test_plain_files_parsed_together_read_as_each_file_alone() -> None:
    bodies = [(simple_body(check_text(data)), name) for data, name in PLAIN]
    assert all(body is not None for body, _ in bodies)
    together = read_meter_files(bodies)
    alone = pl.concat([read_meter_file(data, name) for data, name in PLAIN])
    assert_frame_equal(together, alone)
    assert together.select("source_file", "line_number").rows() == [
        ("a.csv", 2),
        ("a.csv", 3),
        ("dir/b.csv", 2),
        ("dir/b.csv", 3),
        ("c.csv", 2),
        ("d.csv", 2),
        ("d.csv", 3),
        ("d.csv", 4),
    ]
    assert together.filter(source_file="d.csv").select(REQUIRED).rows() == [
        ("M4", "t", "4", ""),
        ("", "t", None, "kW"),
        ("M4", "t", "5", ""),
    ]
    assert together.row(2) == (" M2 ", "2024-03-04T00:00:00Z", None, None, "dir/b.csv", 2)


@pytest.mark.parametrize(
    "text",
    [
        "meter_id,timestamp,energy_unit,energy_value\nM1,t,kW,1\n",  # another column order
        "Meter_ID,timestamp,energy_value,energy_unit\nM1,t,1,kW\n",  # another spelling
        "meter_id,timestamp,energy_value,energy_unit,note\nM1,t,1,kW,x\n",  # an extra column
        "meter_id,timestamp,energy_value,energy_unit\r\nM1,t,1,kW\r\n",  # CRLF
        'meter_id,timestamp,energy_value,energy_unit\n"M1",t,1,kW\n',  # a quoted value
        'meter_id,timestamp,energy_value,energy_unit\nM1,t,1,""""\n',  # an escaped quote
        'meter_id,timestamp,energy_value,energy_unit\nM1,t"x,"1,kW\n',  # a quote that spans a comma
        'meter_id,timestamp,energy_value,energy_unit\nM1,t,1,""kW\n',  # a quote inside a value
        "meter_id,timestamp,energy_value,energy_unit\nM1,t,1,kW\n\nM2,t,1,kW\n",  # a blank line
        "meter_id,timestamp,energy_value,energy_unit\n",  # no data lines
        "meter_id,timestamp,energy_value,energy_unit",
    ],
)
def test_other_files_are_read_one_by_one(text: str) -> None:
    assert simple_body(text) is None


def test_rows_that_do_not_come_out_one_per_line_fall_back_to_file_by_file() -> None:
    # A body that breaks the one-line-one-row promise (a quoted line break, had one slipped through).
    assert read_meter_files([('M1,"2024-03-04\nT00:00:00Z",1,kW\n', "a.csv")]) is None
    assert read_meter_files([]) is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(HEADER + b'M1,t,1,kW,"a\nb"\n\nM2,t,2,kW\n', id="ragged_line_with_a_quoted_break"),
        pytest.param(
            b'meter_id,"time\nstamp",timestamp,energy_value,energy_unit\nM1,a,t,1,kW\n\nM2,a,t,2,kW\n',
            id="quoted_break_in_the_header",
        ),
    ],
)
def test_when_lines_cannot_be_placed_no_row_is_dropped(data: bytes) -> None:
    # A line break polars cut off with a ragged line's extra field, or one in the header: the rows
    # no longer account for the file's lines, so none is dropped (the empty line's row of nulls
    # is then quarantined as missing_meter_id), and M2 is never lost.
    rows = read_meter_file(data, "f.csv")
    assert rows.get_column("meter_id").to_list() == ["M1", None, "M2"]


@pytest.mark.parametrize("size", [0, 1, 4095, (1 << 20) - 1, 1 << 20, (1 << 20) + 1, (2 << 20) + 7])
@pytest.mark.parametrize("alphabet", [b"\x00\x01\t\n\r\x1f\x7f a,", b"ab,\n", b"\t\r\n"])
def test_control_bytes_and_line_breaks_are_counted_exactly_across_chunks(size: int, alphabet: bytes) -> None:
    # Counted by numpy a mebibyte at a time: every byte once, at either side of a chunk's edge.
    data = bytes(random.Random(size).choices(alphabet, k=size))
    assert files._control_bytes(data) == len(data) - len(data.translate(None, files._CONTROL))
    assert files._newlines(data) == data.count(b"\n")
