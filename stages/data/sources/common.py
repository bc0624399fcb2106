"""Helpers every reader shares: finding files, scanning delimited text, pinpointing bad lines."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from gdr_cli.errors import GdrError
from stages.data.bundle import INTERACTIONS_SCHEMA

_INT = re.compile(r"[+-]?\d+\r?")


def require_file(path: Path, what: str, fix: str) -> Path:
    """`path` if it is a readable file, else a one-line error naming it."""
    if not path.is_file():
        raise GdrError(f"{what} not found", where=str(path), fix=fix)
    return path


def find_input(input: Path | None, cache: Path, names: list[str], what: str) -> Path:
    """The folder holding one of `names`: `input` (a folder, or one of those files) or the raw cache."""
    for folder in ([input] if input is not None else [cache]):
        if folder.is_file():
            return folder.parent
        if folder.is_dir() and any((folder / n).is_file() for n in names):
            return folder
    where = str(input if input is not None else cache)
    if input is not None and not input.exists():
        raise GdrError(f"{what} not found", where=where, fix="check the --input path")
    raise GdrError(
        f"no {what} found (looked for {', '.join(names)})",
        where=where,
        fix=f"pass --input with the folder or file, or put the files in {cache}",
    )


def first_line(path: Path, encoding: str = "utf-8") -> str:
    with open(path, encoding=encoding, errors="replace") as fh:
        for line in fh:
            if line.strip():
                return line.rstrip("\r\n").removeprefix("\ufeff")
    raise GdrError("file is empty", where=str(path), fix="give a file with at least one row")


def check_fields(path: Path, sep: str, n: int, *, names: str, encoding: str = "utf-8") -> None:
    """Fail fast when the first line does not split into at least `n` fields on `sep` (wrong delimiter or columns)."""
    line = first_line(path, encoding)
    found = len(line.split(sep))
    if found < n:
        raise GdrError(
            f"expected {n} fields separated by {sep!r} ({names}), found {found}",
            where=f"{path}:1",
            fix="check that this is the right file for the source and that it uses that separator",
        )


def scan_delimited(path: Path, sep: str, columns: dict[int, str], *, header: bool, ts_float: bool = False,
                   encoding: str = "utf8", quote: str | None = None) -> pl.LazyFrame:
    """Lazy user/item/timestamp/order rows from a delimited file; `columns` maps field index -> role.

    A bad timestamp fails at collect time (the reader's `diagnose` then names the line); without a
    timestamp column, file order is time. `ts_float` accepts "881250949.0" (RecBole writes floats).
    Raw dumps are read without quoting (titles hold stray quotes); `quote='"'` is for user CSVs.
    """
    width = max(max(columns) + 1, len(first_line(path).split(sep)))  # every field of the file gets a name
    names = [columns.get(i, f"_f{i}") for i in range(width)]
    has_ts = "timestamp" in columns.values()
    schema = dict.fromkeys(names, pl.String)
    if has_ts and not ts_float:
        schema["timestamp"] = pl.Int64  # parsed by the CSV reader: the fastest path for big files
    lf = pl.scan_csv(
        path, separator=sep, has_header=False, skip_rows=1 if header else 0, new_columns=names,
        schema=schema, quote_char=quote, encoding=encoding, truncate_ragged_lines=True,
    )
    order = pl.col("order").cast(pl.Int64)
    ts = pl.col("timestamp") if has_ts else order.alias("timestamp")
    if has_ts and ts_float:
        ts = ts.str.strip_chars().cast(pl.Float64, strict=True).cast(pl.Int64, strict=True)
    blank = pl.all_horizontal(pl.col(names).is_null())  # empty lines read as all-null rows
    lf = lf.with_row_index("order").filter(~blank).select(pl.col("user"), pl.col("item"), ts, order)
    return lf.select(list(INTERACTIONS_SCHEMA))


def not_utf8(path: Path, lineno: int, raw: bytes) -> GdrError:
    return GdrError(
        f"bytes that are not UTF-8 ({raw!r})",
        where=f"{path}:{lineno}",
        fix="save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8)",
    )


def utf8_bytes(path: Path) -> bytes:
    """The bytes of `path`, checked to be UTF-8: undecodable bytes fail with the file and line (never lossy)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_utf8(path, data.count(b"\n", 0, exc.start) + 1, data[exc.start:exc.end]) from None
    return data


def short_line(data: bytes, sep: str, n_fields: int, *, skip: int) -> tuple[int, int] | None:
    """(line number, fields) of the first non-blank line after the first `skip` with < `n_fields` fields on `sep`."""
    buf = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(buf == 10)
    if buf.size and buf[-1] != 10:
        ends = np.append(ends, buf.size)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    lengths = ends - starts
    cr = (lengths > 0) & (buf[np.maximum(ends - 1, 0)] == 13) if buf.size else lengths > 0
    blank = lengths - cr == 0
    fields = np.bincount(np.searchsorted(ends, np.flatnonzero(buf == ord(sep))), minlength=ends.size) + 1
    bad = np.flatnonzero(~blank & (fields < n_fields) & (np.arange(ends.size) >= skip))
    return (int(bad[0]) + 1, int(fields[bad[0]])) if bad.size else None


def read_side(path: Path, sep: str, n_fields: int, columns: dict[int, str], *, keys: list[str], names: str) -> pl.DataFrame:
    """Fields `columns` (index -> name) of a delimited side file with a header line, as strings; blank lines dropped.

    Bytes that are not UTF-8, a line with fewer than `n_fields` fields (missing column, wrong
    separator) or an empty `keys` field fail with the file and line (`names` lists the fields).
    """
    data = utf8_bytes(path)
    hit = short_line(data, sep, n_fields, skip=1)
    if hit is not None:
        raise GdrError(
            f"expected {n_fields} fields separated by {sep!r} ({names}), found {hit[1]}",
            where=f"{path}:{hit[0]}",
            fix="fix or remove that line (a truncated file or the wrong separator?)",
        )
    width = max(n_fields, max(columns) + 1)
    raw = [f"_f{i}" for i in range(width)]
    frame = pl.read_csv(data, separator=sep, has_header=False, skip_rows=1, new_columns=raw, quote_char=None,
                        schema=dict.fromkeys(raw, pl.String), truncate_ragged_lines=True)
    frame = frame.with_row_index("_line", offset=2).filter(~pl.all_horizontal(pl.col(raw).is_null()))
    frame = frame.select("_line", *(pl.col(f"_f{i}").alias(name) for i, name in columns.items()))
    for key in keys:
        empty = frame.filter(pl.col(key).is_null() | (pl.col(key).str.strip_chars() == ""))
        if empty.height:
            col = next(i for i, name in columns.items() if name == key)
            raise GdrError(f"empty {key} field", where=f"{path}:{empty['_line'][0]}:{col + 1}",
                           fix="every line needs that field; fix or remove the line")
    return frame.drop("_line")


def header_columns(path: Path, sep: str, wanted: list[str], *, names: str) -> tuple[int, dict[int, str]]:
    """(fields in the header line, {index: name} of `wanted`); a missing column fails at `path:1`."""
    utf8_bytes(path)
    have = [h.strip() for h in first_line(path).split(sep)]
    missing = [w for w in wanted if w not in have]
    if missing:
        raise GdrError(
            f"no column {missing[0]!r} (header: {' '.join(have)[:80]!r})",
            where=f"{path}:1",
            fix=f"the header line must name {names}, separated by {sep!r} (is the separator right?)",
        )
    return len(have), {have.index(w): w for w in wanted}


def diagnose_delimited(path: Path, sep: str, n_fields: int, int_fields: dict[int, str], *, header: bool,
                       encoding: str = "utf-8", allow_float: bool = False) -> None:
    """Scan `path` line by line and raise at the first undecodable line, line with too few fields or non-numeric field."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise not_utf8(path, lineno, raw[exc.start:exc.end]) from None
            if (header and lineno == 1) or not line.strip():
                continue
            fields = line.rstrip("\r\n").split(sep)
            if len(fields) < n_fields:
                raise GdrError(
                    f"expected {n_fields} fields separated by {sep!r}, found {len(fields)}",
                    where=f"{path}:{lineno}",
                    fix="fix or remove that line (a truncated file or the wrong separator?)",
                )
            for idx, name in int_fields.items():
                if not _is_number(fields[idx] if not allow_float else fields[idx].strip(), allow_float):
                    raise GdrError(
                        f"non-numeric {name} {fields[idx].strip()[:30]!r}",
                        where=f"{path}:{lineno}:{idx + 1}",
                        fix=f"the {name} column must hold integers (e.g. unix seconds)",
                    )


def _is_number(text: str, allow_float: bool) -> bool:
    """As strict as the CSV reader: integers are bare digits (no spaces), floats anything float() takes."""
    if not allow_float:
        return _INT.fullmatch(text) is not None
    try:
        float(text)
    except ValueError:
        return False
    return True


def gzip_lines(path: Path) -> Iterator[bytes]:
    """Lines of a .gz (or plain) file; a truncated or corrupt archive is a one-line error."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            yield from fh
    except (EOFError, OSError, zlib.error) as exc:
        raise GdrError(
            f"cannot read compressed file: {exc}",
            where=str(path),
            fix="the download is truncated or corrupt; fetch the file again",
        ) from None
