"""Amazon reviews: the Books ratings CSV, and the 2014 per-category 5-core reviews + metadata.

amazon-books: `ratings_Books.csv`, no header, `user,item,rating,timestamp` (22.5M rows in the
real file); scanned lazily so only the three needed columns are ever materialised.
amazon-2014: `reviews_<Cat>_5.json.gz` (JSON lines with reviewerID, asin, unixReviewTime) and
optional `meta_<Cat>.json.gz`, whose lines are JSON or Python-literal dicts; item text is the
title, brand and categories; knowledge-graph attributes are the categories (every level of every
category path, relation 'category') and the brand ('brand'). The Books ratings CSV has no metadata.
"""

from __future__ import annotations

import ast
import json
import re
from functools import partial
from pathlib import Path

import polars as pl

from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.data.bundle import ATTRIBUTES_SCHEMA, INTERACTIONS_SCHEMA, RawBundle
from stages.data.sources.common import check_fields, diagnose_delimited, find_input, gzip_lines, scan_delimited

REVIEW_FIELDS = {"reviewerID": pl.String, "asin": pl.String, "unixReviewTime": pl.Int64}
CHUNK_LINES = 200_000
_ASIN = re.compile(rb"""["']asin["']\s*:\s*["']([^"']+)["']""")


def read_books(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    if input is not None and input.is_file():
        path = input
    else:
        folder = find_input(input, cache, ["ratings_Books.csv"], "Amazon Books ratings CSV")
        path = folder / "ratings_Books.csv"
    check_fields(path, ",", 4, names="user,item,rating,timestamp")
    lf = scan_delimited(path, ",", {0: "user", 1: "item", 3: "timestamp"}, header=False)
    diagnose = partial(diagnose_delimited, path, ",", 4, {3: "timestamp"}, header=False)
    return RawBundle(interactions=lf, items=None, social=None, origin=str(path), diagnose=diagnose)


def _reviews(path: Path) -> pl.DataFrame:
    """reviewerID/asin/unixReviewTime of a JSON-lines (.gz) file, parsed by polars in chunks."""
    chunks, buf, lineno = [], [], 0

    def flush() -> None:
        try:
            chunks.append(pl.read_ndjson(b"".join(buf), schema=REVIEW_FIELDS))
        except pl.exceptions.PolarsError as exc:
            bad = _first_bad_review(buf)
            raise GdrError(f"bad review line: {str(exc).splitlines()[0][:120]}",
                           where=f"{path}:{lineno - len(buf) + bad + 1}",
                           fix="each line must be a JSON object with reviewerID, asin and integer unixReviewTime") from None
        buf.clear()

    for line in gzip_lines(path):
        lineno += 1
        if line.strip():
            buf.append(line if line.endswith(b"\n") else line + b"\n")
        if len(buf) >= CHUNK_LINES:
            flush()
    if buf:
        flush()
    frame = pl.concat(chunks) if chunks else pl.DataFrame(schema=REVIEW_FIELDS)
    nulls = frame.select(pl.any_horizontal(pl.all().is_null()).arg_max()).item() if frame.null_count().sum_horizontal().item() else None
    if nulls is not None:
        raise GdrError("review without reviewerID, asin or unixReviewTime", where=f"{path} (review {nulls + 1})",
                       fix="each review line needs reviewerID, asin and unixReviewTime")
    return frame


def _first_bad_review(lines: list[bytes]) -> int:
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
            int(obj["unixReviewTime"])
            str(obj["reviewerID"]), str(obj["asin"])
        except (ValueError, KeyError, TypeError):
            return i
    return 0


def _meta(path: Path, keep: set[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(raw_id/text, attributes) of the items in `keep`; lines are JSON or Python-literal dicts (the 2014 dumps use both)."""
    ids, texts, edges = [], [], []
    for lineno, line in enumerate(gzip_lines(path), start=1):
        m = _ASIN.search(line)
        if m is None or m.group(1).decode() not in keep:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            try:
                obj = ast.literal_eval(line.decode("utf-8", errors="replace"))
            except (ValueError, SyntaxError):
                raise GdrError("metadata line is neither JSON nor a Python dict", where=f"{path}:{lineno}",
                               fix="the file is corrupt; fetch it again") from None
        cats = [c for path_ in obj.get("categories") or [] for c in path_]
        parts = [obj.get("title"), obj.get("brand"), ", ".join(dict.fromkeys(cats)) or None]
        ids.append(str(obj["asin"]))
        texts.append(" | ".join(str(p) for p in parts if p) or None)
        edges += [(ids[-1], "category", str(c)) for c in dict.fromkeys(cats)]
        if obj.get("brand"):
            edges.append((ids[-1], "brand", str(obj["brand"])))
    items = pl.DataFrame({"raw_id": ids, "text": texts}, schema={"raw_id": pl.String, "text": pl.String})
    return items, pl.DataFrame(edges, schema=ATTRIBUTES_SCHEMA, orient="row")


def read_2014(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    cat = config.category
    if not cat:
        raise GdrError("amazon-2014 needs a category", fix="pass --category NAME, e.g. --category Beauty (as in reviews_Beauty_5.json.gz)")
    reviews_name = f"reviews_{cat}_5.json.gz"
    if input is not None and input.is_file():
        reviews, folder = input, input.parent
    else:
        folder = find_input(input, cache, [reviews_name, f"reviews_{cat}_5.json"], f"Amazon 2014 {cat} reviews")
        reviews = folder / reviews_name if (folder / reviews_name).is_file() else folder / f"reviews_{cat}_5.json"
    frame = _reviews(reviews)
    lf = frame.lazy().select(
        pl.col("reviewerID").alias("user"), pl.col("asin").alias("item"), pl.col("unixReviewTime").alias("timestamp")
    ).with_row_index("order").select(list(INTERACTIONS_SCHEMA)).with_columns(pl.col("order").cast(pl.Int64))
    meta = next((p for p in (folder / f"meta_{cat}.json.gz", folder / f"meta_{cat}.json") if p.is_file()), None)
    items, attributes = _meta(meta, set(frame["asin"].unique().to_list())) if meta is not None else (None, None)
    return RawBundle(interactions=lf, items=items, social=None, origin=str(reviews), attributes=attributes)
