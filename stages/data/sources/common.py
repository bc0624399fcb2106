"""Helpers every reader shares: finding files, scanning delimited text, pinpointing bad lines."""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

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


def diagnose_delimited(path: Path, sep: str, n_fields: int, int_fields: dict[int, str], *, header: bool,
                       encoding: str = "utf-8", allow_float: bool = False) -> None:
    """Scan `path` line by line and raise at the first line with too few fields or a non-numeric field."""
    with open(path, encoding=encoding, errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
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
