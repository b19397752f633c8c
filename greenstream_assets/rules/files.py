"""Rule 6: a meter file is read whole or rejected whole, with a reason a person can act on."""

from __future__ import annotations

import io

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


def _control_bytes(data: bytes) -> int:
    return len(data) - len(data.translate(None, _CONTROL))


def read_meter_file(data: bytes, source_file: str) -> pl.DataFrame:
    """Parse CSV bytes to text columns ``REQUIRED_COLUMNS`` + ``source_file``, ``line_number``.

    Column names are matched after trimming spaces and case; order is free and extra columns are
    dropped. ``line_number`` is the 1-based line in the file (the header is line 1).
    Raises ``RejectedFile`` for an empty file, bytes that are not UTF-8 text, unparseable CSV, or
    missing required columns.
    """
    if not data.strip():
        raise RejectedFile("empty_file", "the file has no content")
    # Binary data (an image, an archive) is full of NUL and other control bytes; a stray one in a
    # text file is a bad value, quarantined with its row.
    if _control_bytes(data) * 100 > len(data):
        raise RejectedFile("not_text", "the file is binary data (NUL bytes), not CSV text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise RejectedFile("bad_encoding", f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        frame = pl.read_csv(
            io.StringIO(text),
            infer_schema=False,
            truncate_ragged_lines=True,
            raise_if_empty=False,
        )
    except pl.exceptions.PolarsError as err:
        raise RejectedFile("unparseable_csv", str(err).splitlines()[0][:300]) from None
    names = {col.strip().lower(): col for col in frame.columns}
    repeated = sorted(
        {name for name in REQUIRED_COLUMNS if sum(col.strip().lower() == name for col in frame.columns) > 1}
    )
    if repeated:
        raise RejectedFile("ambiguous_columns", "column(s) given more than once: " + ", ".join(repeated))
    missing = [col for col in REQUIRED_COLUMNS if col not in names]
    if missing:
        raise RejectedFile("missing_columns", "missing required column(s): " + ", ".join(missing))
    if frame.height == 0:
        raise RejectedFile("empty_file", "the header has no data rows")
    return frame.select(
        *(pl.col(names[col]).alias(col) for col in REQUIRED_COLUMNS),
        source_file=pl.lit(source_file),
        line_number=pl.int_range(2, frame.height + 2, dtype=pl.Int64),
    )
