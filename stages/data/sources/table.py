"""Any interaction table a user brings: CSV/TSV (with a header) or Parquet, columns named by config.

`--user-col`, `--item-col` and `--time-col` (integer time; none = file order) pick the columns;
`--sep` overrides the separator guessed from the extension (tab for .tsv/.txt/.inter, else comma).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl

from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.data.bundle import INTERACTIONS_SCHEMA, RawBundle
from stages.data.sources.common import diagnose_delimited, first_line, require_file, scan_delimited


def _missing(col: str, have: list[str], path: Path, flag: str) -> GdrError:
    return GdrError(f"no column {col!r} (columns: {', '.join(have[:12])})", where=f"{path}:1",
                    fix=f"name the right column with {flag}, or check --sep")


def read(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    if input is None:
        raise GdrError("the interactions source needs --input", fix="pass --input with a CSV, TSV or Parquet file")
    path = require_file(input, "interaction table", "pass --input with a CSV, TSV or Parquet file")
    wanted = {"user": config.user_col, "item": config.item_col}
    if config.time_col:
        wanted["timestamp"] = config.time_col
    flags = {"user": "--user-col", "item": "--item-col", "timestamp": "--time-col"}
    if path.suffix == ".parquet":
        try:
            lf = pl.scan_parquet(path)
            have = lf.collect_schema().names()
        except pl.exceptions.PolarsError as exc:
            raise GdrError(f"unreadable Parquet file: {str(exc).splitlines()[0]}", where=str(path),
                           fix="check that the file is Parquet") from None
        for role, col in wanted.items():
            if col not in have:
                raise _missing(col, have, path, flags[role])
        ts = pl.col(config.time_col).cast(pl.Int64, strict=True) if config.time_col else pl.col("order")
        lf = lf.with_row_index("order").select(
            pl.col(config.user_col).cast(pl.String).alias("user"), pl.col(config.item_col).cast(pl.String).alias("item"),
            ts.alias("timestamp"), pl.col("order").cast(pl.Int64))
        return RawBundle(interactions=lf.select(list(INTERACTIONS_SCHEMA)), items=None, social=None, origin=str(path))
    sep = config.sep or ("\t" if path.suffix in (".tsv", ".txt", ".inter") else ",")
    have = [c.strip().strip('"') for c in first_line(path).split(sep)]
    cols = {}
    for role, col in wanted.items():
        if col not in have:
            raise _missing(col, have, path, flags[role])
        cols[have.index(col)] = role
    lf = scan_delimited(path, sep, cols, header=True, quote='"')
    ints = {have.index(config.time_col): config.time_col} if config.time_col else {}
    diagnose = partial(diagnose_delimited, path, sep, max(cols) + 1, ints, header=True)
    return RawBundle(interactions=lf, items=None, social=None, origin=str(path), diagnose=diagnose)
