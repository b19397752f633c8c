"""Rule 6: a meter file is read whole or rejected whole, with a reason a person can act on."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl

from greenstream_assets.rules.config import REQUIRED_COLUMNS


class RejectedFile(ValueError):
    """The file cannot be read as meter readings; ``reason`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# Bytes that never appear in CSV text (tab, newline and carriage return excepted).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 13))


# Bytes are counted a mebibyte at a time, as numpy arrays over the file's own buffer (no copy):
# vectorized, and without the GIL, which ``bytes.translate`` and ``bytes.count`` hold while the
# other ingestion threads wait for it (0.13 and 0.10 s for a day's 197 MB, against 0.06 and 0.03).
_COUNT_CHUNK = 1 << 20


def _chunks(data: bytes) -> Iterator[np.ndarray]:
    for start in range(0, len(data), _COUNT_CHUNK):
        yield np.frombuffer(data, np.uint8, min(_COUNT_CHUNK, len(data) - start), start)


def _control_bytes(data: bytes) -> int:
    """How many bytes of ``data`` are ``_CONTROL`` bytes."""
    count = 0
    for chunk in _chunks(data):
        low = int(np.count_nonzero(chunk < 32))
        if low:  # below 32: newlines, mostly; tabs and carriage returns are counted only if need be
            low -= int(np.count_nonzero(chunk == 10))
        if low:
            low -= int(np.count_nonzero(chunk == 9)) + int(np.count_nonzero(chunk == 13))
        count += low
    return count


def _newlines(data: bytes) -> int:
    return sum(int(np.count_nonzero(chunk == 10)) for chunk in _chunks(data))


def check_bytes(data: bytes) -> bytes:
    """The file's bytes as UTF-8 text without a byte-order mark, or ``RejectedFile`` when it is
    empty, binary or not UTF-8. Plain ASCII (what meters send) is not decoded at all."""
    if not data or data.removeprefix(b"\xef\xbb\xbf").isspace() or data == b"\xef\xbb\xbf":
        raise RejectedFile("empty_file", "the file has no content")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RejectedFile("bad_encoding", "UTF-16 text (byte-order mark); files must be UTF-8")
    # Binary data (an image, an archive) is full of NUL and other control bytes; a stray one in a
    # text file is a bad value, quarantined with its row.
    if _control_bytes(data) * 100 > len(data):
        raise RejectedFile("not_text", "the file is binary data (NUL bytes), not CSV text")
    if data.isascii():
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RejectedFile("bad_encoding", f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    return data.removeprefix(b"\xef\xbb\xbf")


def check_text(data: bytes) -> str:
    """``check_bytes``, decoded."""
    return check_bytes(data).decode("utf-8")


# The header as the meters send it. A file that starts with exactly this line and holds only plain
# lines can be parsed together with others like it (see ``simple_body``).
CANONICAL_HEADER = ",".join(REQUIRED_COLUMNS)


def _only_empty_quoted_fields(body: str) -> bool:
    """Every quote in ``body`` belongs to an empty quoted field (``""`` between commas or line
    ends). Plain string replaces, so a file of 200,000 lines takes milliseconds."""
    text = "\n" + body + "\n"
    while True:
        done = (
            text.replace(',"",', ",,")
            .replace('\n"",', "\n,")
            .replace(',""\n', ",\n")
            .replace('\n""\n', "\n\n")
        )
        if done == text:
            return '"' not in text
        text = done


def simple_body(text: str) -> str | None:
    """The data lines of a file that ``read_meter_files`` may parse in one go with others, or None.

    Such a file has exactly the canonical header, at least one data line, no carriage returns or
    blank lines, and no quotes but empty quoted fields (``""``, as CSV writers send an empty
    text): each line is one row, as ``read_meter_file`` would read it.
    """
    header, newline, body = text.partition("\n")
    if header != CANONICAL_HEADER or not newline or not body.strip("\n"):
        return None
    if "\r" in body or "\n\n" in body or body.startswith("\n"):
        return None
    if '"' in body and not _only_empty_quoted_fields(body):
        return None
    return body if body.endswith("\n") else body + "\n"


def read_meter_files(bodies: list[tuple[str, str]]) -> pl.DataFrame | None:
    """Many files' ``simple_body`` (with their source file) parsed in one pass, as ``read_meter_file``
    reads each: one polars call instead of one per file (a day can be 50,000 per-meter files).

    None when the rows parsed are not exactly one per line (the caller then reads file by file).
    """
    if not bodies:
        return None
    counts = [body.count("\n") for body, _ in bodies]
    try:
        frame = pl.read_csv(
            "".join(body for body, _ in bodies).encode(),
            has_header=False,
            new_columns=list(REQUIRED_COLUMNS),
            schema_overrides=dict.fromkeys(REQUIRED_COLUMNS, pl.String),
            infer_schema=False,
            truncate_ragged_lines=True,
        )
    except pl.exceptions.PolarsError:
        return None
    if frame.height != sum(counts) or frame.width != len(REQUIRED_COLUMNS):
        return None
    files = pl.DataFrame(
        {"source_file": [source for _, source in bodies], "_rows": counts},
        schema={"source_file": pl.String, "_rows": pl.Int64},
    ).with_columns(_first=pl.col("_rows").cum_sum() - pl.col("_rows"))
    spans = files.select(
        pl.col("source_file").repeat_by("_rows").explode(), pl.col("_first").repeat_by("_rows").explode()
    )
    return frame.with_columns(
        source_file=spans.get_column("source_file"),
        line_number=pl.int_range(0, frame.height, dtype=pl.Int64) - spans.get_column("_first") + 2,
    )


def read_meter_file(data: bytes, source_file: str) -> pl.DataFrame:
    """Parse a file's bytes (``check_text``, then ``read_meter_text``); ``RejectedFile`` for an empty
    file, bytes that are not UTF-8 text, unparseable CSV, or missing required columns."""
    return read_meter_text(check_text(data), source_file)


def read_meter_text(text: str | bytes, source_file: str) -> pl.DataFrame:
    """Parse CSV text (or bytes from ``check_bytes``) to text columns ``REQUIRED_COLUMNS`` + ``source_file``, ``line_number``.

    Column names are matched after trimming spaces and case; order is free and extra columns are
    dropped. Empty lines are no rows. ``line_number`` is the 1-based line in the file where the row
    starts (the header is line 1). Raises ``RejectedFile`` for unparseable CSV, missing or repeated required columns, or a
    header without data rows.
    """
    # Bytes: polars parses them without a copy through Python.
    data = text.encode() if isinstance(text, str) else text
    try:
        frame = pl.read_csv(data, infer_schema=False, truncate_ragged_lines=True, raise_if_empty=False)
    except pl.exceptions.PolarsError as err:
        raise RejectedFile("unparseable_csv", str(err).splitlines()[0][:300]) from None
    names = {}
    for name in REQUIRED_COLUMNS:
        found = [col for col in frame.columns if col.strip().lower() == name]
        if len(found) > 1:
            # An extra column spelled like a required one in another case is ignored as extras are;
            # two spellings with none exact are ambiguous.
            found = [col for col in found if col.strip() == name]
            if len(found) != 1:
                raise RejectedFile("ambiguous_columns", f"column {name} given more than once")
        if found:
            names[name] = found[0]
    missing = [col for col in REQUIRED_COLUMNS if col not in names]
    if missing:
        raise RejectedFile("missing_columns", "missing required column(s): " + ", ".join(missing))
    rows = frame.select(
        *(pl.col(names[col]).alias(col) for col in REQUIRED_COLUMNS),
        source_file=pl.lit(source_file),
        line_number=pl.int_range(2, frame.height + 2, dtype=pl.Int64),
    )
    # Polars makes a row of nulls of an empty line (and skips empty lines before the header). The
    # byte scans (~13 ms an 8 MB file) run only when there is such a row.
    nulls = frame.select(pl.all_horizontal(pl.all().is_null())).to_series()
    blank_lines = data.startswith((b"\n", b"\r\n")) or (
        bool(nulls.any()) and (b"\n\n" in data or b"\n\r\n" in data)
    )
    lines = _newlines(data) + (not data.endswith(b"\n"))
    spans = None
    if lines != frame.height + 1 and b'"' in data:
        # More lines than rows: quoted values hold line breaks, and such a row takes more than one
        # line of the file (counted only then: most files quote nothing but an empty "").
        spans = frame.select(pl.sum_horizontal(pl.all().str.count_matches("\n").fill_null(0))).to_series()
        spans = spans if spans.sum() else None
    if blank_lines or spans is not None:
        rows = _by_line(rows, data, spans, nulls)
    if rows.height == 0:
        raise RejectedFile("empty_file", "the header has no data rows")
    return rows


def _by_line(rows: pl.DataFrame, data: bytes, spans: pl.Series | None, nulls: pl.Series) -> pl.DataFrame:
    """``rows`` numbered by the line each starts on, without the rows polars made of empty lines (a
    row of nulls each). ``spans``: the line breaks inside each row's quoted values, if any;
    ``nulls``: which parsed rows are nulls in every column. Empty lines before the header are
    skipped by polars itself.

    Only when the rows account for every line of the file exactly is a row dropped, and only a row
    of nulls in every column polars parsed: a line break polars counted elsewhere (in a quoted
    header, in a ragged line's extra field it cut off) leaves every row and its parsed numbering.
    """
    lines = pl.Series("line", [data.decode("utf-8")]).str.split("\n").explode()
    if data.endswith(b"\n"):
        lines = lines.head(-1)
    blank = lines.str.strip_suffix("\r").str.len_bytes() == 0
    header = int(blank.arg_min() or 0)  # the first line that is not empty
    taken = pl.Series("taken", [1] * rows.height, dtype=pl.Int64) + (
        spans.cast(pl.Int64) if spans is not None else 0
    )
    if header + 1 + int(taken.sum()) != lines.len():
        return rows
    first = (taken.cum_sum() - taken + header + 2).alias("line_number")  # 1-based
    # A row of one empty line is no row; a row of empty fields (",,,") is one.
    empty = (taken == 1) & blank.gather(first - 1) & nulls
    return rows.with_columns(first).filter(~empty)
