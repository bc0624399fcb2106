"""The raw bundle every source reader returns, whatever the format it reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

INTERACTIONS_SCHEMA = {"user": pl.String, "item": pl.String, "timestamp": pl.Int64, "order": pl.Int64}
ITEMS_SCHEMA = {"raw_id": pl.String, "text": pl.String}
SOCIAL_SCHEMA = {"user": pl.String, "friend": pl.String}
ATTRIBUTES_SCHEMA = {"raw_id": pl.String, "relation": pl.String, "entity": pl.String}
"""Item -> attribute edges (e.g. genre, year, tag); optional extra columns user:str, timestamp:int64 mark an
edge that comes from one interaction (a Last.fm tag), so that held-out interactions give no edge."""


@dataclass
class RawBundle:
    """What a source yields before cleaning.

    interactions: lazy rows user:str, item:str, timestamp:int64, order:int64 (input order, for ties).
    items: raw_id:str, text:str (nullable), or None when the source has no item side file.
    social: user:str, friend:str in input order, or None when the source has no friend graph.
    origin: the file or folder read, for messages and the manifest.
    diagnose: called when collecting `interactions` fails or yields nulls; re-reads the input
        slowly and raises a `GdrError` naming the first bad line (returns if it finds none).
    attributes: item -> attribute edges (ATTRIBUTES_SCHEMA, + user/timestamp for per-interaction
        ones), or None when the source has no item attributes; `preprocess` turns them into kg.parquet.
    """

    interactions: pl.LazyFrame
    items: pl.DataFrame | None
    social: pl.DataFrame | None
    origin: str
    diagnose: Callable[[], None] | None = None
    attributes: pl.DataFrame | None = None


def empty_items() -> pl.DataFrame:
    return pl.DataFrame(schema=ITEMS_SCHEMA)


def frame_bundle(frame: pl.DataFrame, **kwargs) -> RawBundle:
    """A bundle from in-memory interactions user/item/timestamp (order added from row position)."""
    lf = frame.lazy().select(
        pl.col("user").cast(pl.String),
        pl.col("item").cast(pl.String),
        pl.col("timestamp").cast(pl.Int64),
    ).with_row_index("order").with_columns(pl.col("order").cast(pl.Int64))
    return RawBundle(interactions=lf.select(list(INTERACTIONS_SCHEMA)), **kwargs)
