"""The knowledge graph of item -> attribute edges (`kg.parquet`), from what a source knows about its items.

    item:int32 (compact id), relation:str (e.g. 'genre', 'year', 'tag', 'category', 'brand'), entity:str

Rules (the same for every source):
- only kept items; entities are stripped, empty ones dropped; one row per (item, relation, entity);
- an entity linked to fewer than MIN_ITEMS kept items is dropped: an attribute of one item connects
  nothing, so it only adds a free parameter;
- edges that come from one interaction (Last.fm tags carry user and timestamp) are dropped when that
  interaction is a validation or test target: a held-out interaction never leaks through the graph.
Rows are sorted by item, relation, entity.
"""

from __future__ import annotations

import polars as pl

KG_SCHEMA = {"item": pl.Int32, "relation": pl.String, "entity": pl.String}
MIN_ITEMS = 2
"""Fewest kept items an attribute entity must link to (see the module docstring)."""


def held_out(interactions: pl.DataFrame) -> pl.DataFrame:
    """(user, item, timestamp) of each user's validation and test interaction: the last two rows per user
    of the time-sorted interactions (the leave-one-out split's targets). Users with < 3 rows are not split,
    but their last two rows are kept out as well (they are never trained on either)."""
    return interactions.group_by("user", maintain_order=True).tail(2).select("user", "item", "timestamp")


def kg_table(
    attributes: pl.DataFrame | None, items: pl.DataFrame, users: pl.DataFrame, interactions: pl.DataFrame
) -> pl.DataFrame:
    """The kg table of the kept `items` (item, raw_id) from the source's `attributes` (ATTRIBUTES_SCHEMA,
    optional user/timestamp); `users` (user, raw_id) and `interactions` (compact, time-sorted) identify
    held-out interactions. No attributes -> an empty table of the same schema."""
    if attributes is None or attributes.height == 0:
        return pl.DataFrame(schema=KG_SCHEMA)
    edges = (
        attributes.lazy()
        .with_columns(pl.col("raw_id").cast(pl.String), pl.col("entity").cast(pl.String).str.strip_chars())
        .filter(pl.col("entity").is_not_null() & (pl.col("entity") != ""))
        .join(items.lazy().select("raw_id", "item"), on="raw_id", how="inner")
    )
    if "user" in attributes.columns:
        ids = users.lazy().select(pl.col("raw_id").alias("user_raw"), "user")
        edges = (
            edges.rename({"user": "user_raw"})
            .join(ids, on="user_raw", how="left")
            .join(held_out(interactions).lazy(), on=["user", "item", "timestamp"], how="anti")
        )
    edges = edges.select(pl.col("item").cast(pl.Int32), "relation", "entity").unique()
    return (
        edges.filter(pl.len().over("relation", "entity") >= MIN_ITEMS)
        .sort("item", "relation", "entity")
        .collect()
        .cast(KG_SCHEMA)
    )


def kg_stats(kg: pl.DataFrame) -> dict[str, int]:
    """Manifest stats: edges, distinct (relation, entity) pairs, relations, items with at least one edge."""
    return {
        "kg_edges": kg.height,
        "kg_entities": kg.select("relation", "entity").n_unique() if kg.height else 0,
        "kg_relations": kg["relation"].n_unique(),
        "kg_items": kg["item"].n_unique(),
    }
