"""HetRec 2011 Last.fm 2K: tagging events as interactions, `user_friends.dat` as the friend graph.

Interactions are tag assignments (user, artist) in time order: `user_taggedartists-timestamps.dat`
(userID artistID tagID timestamp in ms, converted to seconds) when present, else
`user_taggedartists.dat` (day/month/year -> unix seconds at 00:00 UTC; same-day events keep
file order). Several tags on one artist at one time are one interaction after the exact-duplicate
drop. `artists.dat` (UTF-8) gives item text (the artist name). Side files that are not UTF-8,
lack a column or have a short line fail with the file and line, as the tagging file does.
The knowledge graph's attributes are the tags (relation 'tag'): artist -> tag for every tagging
event, named by `tags.dat` (tagValue; the HetRec file is latin-1, UTF-8 is read as well) or by the
tag id where that file is absent; each event keeps its user and time, so the tags of validation
and test events are left out (`stages/data/kg.py`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import polars as pl

from stages.config.preprocess import PreprocessConfig
from gdr_cli.errors import GdrError
from stages.data.bundle import ATTRIBUTES_SCHEMA, INTERACTIONS_SCHEMA, RawBundle
from stages.data.sources.common import (
    check_fields,
    diagnose_delimited,
    find_input,
    header_columns,
    read_side,
    scan_delimited,
)

STAMPED = "user_taggedartists-timestamps.dat"
DATED = "user_taggedartists.dat"


def _events(path: Path, stamped: bool) -> pl.LazyFrame:
    """user, item, tag (str) and timestamp (unix s, int64) of every tagging event, plus its file order."""
    names = ["user", "item", "tag", "timestamp"] if stamped else ["user", "item", "tag", "day", "month", "year"]
    lf = pl.scan_csv(path, separator="\t", has_header=False, skip_rows=1, new_columns=names,
                     schema=dict.fromkeys(names, pl.String), quote_char=None, truncate_ragged_lines=True)
    if stamped:
        ts = pl.col("timestamp").cast(pl.Int64, strict=True) // 1000  # ms -> s
    else:
        date = pl.date(*(pl.col(c).str.strip_chars().cast(pl.Int32, strict=True) for c in ("year", "month", "day")))
        ts = date.cast(pl.Datetime("ms")).dt.epoch("s")
    return lf.with_row_index("order").select(
        "user", "item", "tag", ts.cast(pl.Int64).alias("timestamp"), pl.col("order").cast(pl.Int64)
    )


def _dated(path: Path) -> pl.LazyFrame:
    return _events(path, stamped=False).select(list(INTERACTIONS_SCHEMA))


def _tag_names(path: Path) -> pl.DataFrame:
    """tag (id) -> name of `tags.dat` (tagID tagValue, tab-separated, UTF-8 or latin-1)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    header = text.split("\n", 1)[0].rstrip("\r").split("\t")
    if header[:2] != ["tagID", "tagValue"]:
        raise GdrError(f"unexpected header {header[:2]!r}", where=f"{path}:1", fix="tags.dat starts with `tagID<TAB>tagValue`")
    return pl.read_csv(text.encode(), separator="\t", has_header=True, quote_char=None, truncate_ragged_lines=True,
                       schema={"tagID": pl.String, "tagValue": pl.String}).select(
        pl.col("tagID").str.strip_chars().alias("tag"), pl.col("tagValue").alias("name"))


def _attributes(path: Path, stamped: bool, tags: Path) -> pl.DataFrame:
    """Artist -> tag edges of every tagging event, with the event's user and time (ATTRIBUTES_SCHEMA + user, timestamp)."""
    try:
        events = _events(path, stamped).drop_nulls(["user", "item", "tag", "timestamp"]).collect()
    except pl.exceptions.PolarsError:
        return pl.DataFrame(schema={**ATTRIBUTES_SCHEMA, "user": pl.String, "timestamp": pl.Int64})  # the scan reports it
    entity = pl.col("tag").str.strip_chars()
    if tags.is_file():
        events = events.with_columns(entity).join(_tag_names(tags), on="tag", how="left")
        entity = pl.coalesce("name", "tag")
    return events.select(pl.col("item").alias("raw_id"), pl.lit("tag").alias("relation"), entity.alias("entity"),
                         "user", "timestamp")


def _side(path: Path, wanted: dict[str, str], *, keys: list[str], names: str) -> pl.DataFrame:
    """Columns `wanted` (header name -> table name) of a tab-separated side file; bad input names the line."""
    n_fields, columns = header_columns(path, "\t", list(wanted), names=names)
    frame = read_side(path, "\t", n_fields, columns, keys=keys, names=names)
    return frame.select(pl.col(src).alias(dst) for src, dst in wanted.items())


def read(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    folder = find_input(input, cache, [STAMPED, DATED], "Last.fm 2K tagging file")
    if (folder / STAMPED).is_file():
        path = folder / STAMPED
        check_fields(path, "\t", 4, names="userID artistID tagID timestamp")
        lf = scan_delimited(path, "\t", {0: "user", 1: "item", 3: "timestamp"}, header=True)
        lf = lf.with_columns(pl.col("timestamp") // 1000)
        diagnose = partial(diagnose_delimited, path, "\t", 4, {3: "timestamp"}, header=True)
    else:
        path = folder / DATED
        check_fields(path, "\t", 6, names="userID artistID tagID day month year")
        lf = _dated(path)
        diagnose = partial(diagnose_delimited, path, "\t", 6, {3: "day", 4: "month", 5: "year"}, header=True)
    attributes = _attributes(path, path.name == STAMPED, folder / "tags.dat")
    items = social = None
    if (folder / "artists.dat").is_file():
        items = _side(folder / "artists.dat", {"id": "raw_id", "name": "text"}, keys=["id"], names="id name url pictureURL")
    if (folder / "user_friends.dat").is_file():
        social = _side(folder / "user_friends.dat", {"userID": "user", "friendID": "friend"}, keys=["userID", "friendID"],
                       names="userID friendID")
    return RawBundle(interactions=lf, items=items, social=social, origin=str(path), diagnose=diagnose,
                     attributes=attributes)
