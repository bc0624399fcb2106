"""IDGenRec / SASRec text folders: `user_sequence.txt` (+ `item_plain_text.txt`, `friend_sequence.txt`).

Each `user_sequence.txt` line is `user item item ...` in time order; the timestamp is the
position in the line. `item_plain_text.txt` lines are `item<whitespace or tab>text`;
`friend_sequence.txt` lines are `user friend friend ...` (friends in that order). The optional
`item_kg.txt` (written by `gdr export --format sequences`) holds item -> attribute edges, one
`item<TAB>relation<TAB>entity` per line (the knowledge graph). Bytes that are not UTF-8 fail with the
file and line.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.data.bundle import ATTRIBUTES_SCHEMA, INTERACTIONS_SCHEMA, RawBundle
from stages.data.sources.common import find_input, short_line, utf8_bytes

SEQUENCES = "user_sequence.txt"
KG = "item_kg.txt"


def _lines(path: Path) -> pl.DataFrame:
    """[line:u32, tokens:list[str]] of the non-empty lines of a whitespace-separated file."""
    frame = pl.read_csv(utf8_bytes(path), has_header=False, separator="\x1f", quote_char=None, new_columns=["raw"],
                        schema={"raw": pl.String})
    return frame.with_row_index("line", offset=1).with_columns(
        pl.col("raw").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    ).rename({"raw": "tokens"}).filter(pl.col("tokens").list.first() != "")


def _sequences(path: Path) -> pl.DataFrame:
    lines = _lines(path)
    short = lines.filter(pl.col("tokens").list.len() < 2)
    if short.height:
        raise GdrError("a sequence line needs a user and at least one item", where=f"{path}:{short['line'][0]}",
                       fix="lines are `user item item ...`, separated by spaces or tabs")
    return lines.select(
        pl.col("tokens").list.first().alias("user"), pl.col("tokens").list.slice(1).alias("item")
    ).explode("item").with_columns(pl.int_range(pl.len()).over("user").cast(pl.Int64).alias("timestamp"))


def read(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    folder = find_input(input, cache, [SEQUENCES], "user_sequence.txt")
    path = folder / SEQUENCES
    inter = _sequences(path).with_row_index("order").with_columns(pl.col("order").cast(pl.Int64))
    items = social = None
    text = folder / "item_plain_text.txt"
    if text.is_file():
        raw = pl.read_csv(utf8_bytes(text), has_header=False, separator="\x1f", quote_char=None, new_columns=["raw"],
                          schema={"raw": pl.String})
        parts = pl.col("raw").str.strip_chars().str.extract_groups(r"^(\S+)\s*(.*)$")
        items = raw.select(parts.struct.field("1").alias("raw_id"), parts.struct.field("2").alias("text")).filter(
            pl.col("raw_id").is_not_null())
        items = items.with_columns(pl.when(pl.col("text") == "").then(None).otherwise(pl.col("text")).alias("text"))
    friends = folder / "friend_sequence.txt"
    if friends.is_file():
        social = _lines(friends).select(
            pl.col("tokens").list.first().alias("user"), pl.col("tokens").list.slice(1).alias("friend")
        ).explode("friend").drop_nulls()
    kg = folder / KG
    attributes = _kg_lines(kg) if kg.is_file() else None
    return RawBundle(interactions=inter.lazy().select(list(INTERACTIONS_SCHEMA)), items=items, social=social,
                     origin=str(path), attributes=attributes)


def _kg_lines(path: Path) -> pl.DataFrame:
    """Item -> attribute edges (ATTRIBUTES_SCHEMA) of an `item_kg.txt`: `item<TAB>relation<TAB>entity` lines."""
    data = utf8_bytes(path)
    hit = short_line(data, "\t", 3, skip=0)
    if hit is not None:
        raise GdrError(f"expected 3 tab-separated fields (item, relation, entity), found {hit[1]}",
                       where=f"{path}:{hit[0]}", fix="fix or remove that line")
    if not data.strip():
        return pl.DataFrame(schema=ATTRIBUTES_SCHEMA)
    frame = pl.read_csv(data, has_header=False, separator="\t", quote_char=None, new_columns=list(ATTRIBUTES_SCHEMA),
                        schema=ATTRIBUTES_SCHEMA, truncate_ragged_lines=True)
    return frame.drop_nulls("raw_id")
