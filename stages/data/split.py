"""Leave-one-out splits (PROTOCOL.md §1) of interactions and of the friend graph.

Interactions: per user in time order, last item = test, second-to-last = valid, the rest = train.
Friends: the same over each user's friends in input order (users with < 3 friends are left out);
a friendship is one undirected edge, so a held-out friend v of u also leaves v's training list
(otherwise u would still be listed among v's friends, and the edge would leak into training).
"""

from __future__ import annotations

import polars as pl

SPLIT_SCHEMA = {"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32}


def leave_one_out(seq: pl.DataFrame, value: str) -> pl.DataFrame:
    """`seq` rows (user, `value`) already in per-user order -> user/train/valid/test; users with < 3 rows dropped."""
    out = (
        seq.lazy()
        .group_by("user", maintain_order=True)
        .agg(
            pl.col(value).slice(0, pl.len() - 2).alias("train"),
            pl.col(value).get(-2, null_on_oob=True).alias("valid"),
            pl.col(value).last().alias("test"),
            pl.len().alias("n"),
        )
        .filter(pl.col("n") >= 3)
        .drop("n")
        .sort("user")
        .collect()
    )
    return out.cast(SPLIT_SCHEMA).select(list(SPLIT_SCHEMA))


def social_graph(raw: pl.DataFrame | None, users: pl.DataFrame) -> pl.DataFrame:
    """Friend edges between kept users: symmetrised, deduplicated, no self-loops -> user/friend int32.

    Rows are sorted by user, then by the input position of the edge's first mention (either direction),
    which is the friend order the social split uses.
    """
    schema = {"user": pl.Int32, "friend": pl.Int32}
    if raw is None or raw.height == 0:
        return pl.DataFrame(schema=schema)
    ids = users.lazy().select(pl.col("raw_id"), pl.col("user").alias("id"))
    edges = (
        raw.lazy()
        .select(pl.col("user").cast(pl.String), pl.col("friend").cast(pl.String))
        .with_row_index("pos")
        .join(ids, left_on="user", right_on="raw_id", how="inner")
        .join(ids, left_on="friend", right_on="raw_id", how="inner", suffix="_f")
        .select(pl.col("id").alias("user"), pl.col("id_f").alias("friend"), "pos")
        .filter(pl.col("user") != pl.col("friend"))
    )
    both = pl.concat([edges, edges.select(pl.col("friend").alias("user"), pl.col("user").alias("friend"), "pos")])
    return (
        both.group_by("user", "friend")
        .agg(pl.col("pos").min())
        .sort("user", "pos", "friend")
        .select("user", "friend")
        .collect()
        .cast(schema)
    )


def social_leave_one_out(social: pl.DataFrame) -> pl.DataFrame:
    """Leave-one-out over friend sequences (`social` rows user/friend in per-user order) without leakage.

    Every held-out edge (u, v) (v = u's valid or test friend) is removed from v's training list as
    well; users whose training list becomes empty are dropped (nothing to recommend from).
    """
    split = leave_one_out(social, "friend")
    held = pl.concat([
        split.select(pl.col("valid").alias("user"), pl.col("user").alias("friend")),
        split.select(pl.col("test").alias("user"), pl.col("user").alias("friend")),
    ])
    train = (
        split.lazy()
        .select("user", pl.col("train").alias("friend"))
        .explode("friend")
        .with_row_index("pos")
        .join(held.lazy(), on=["user", "friend"], how="anti")
        .drop_nulls("friend")
        .sort("pos")
        .group_by("user", maintain_order=True)
        .agg(pl.col("friend").alias("train"))
    )
    out = split.lazy().drop("train").join(train, on="user", how="inner").sort("user").collect()
    return out.cast(SPLIT_SCHEMA).select(list(SPLIT_SCHEMA))
