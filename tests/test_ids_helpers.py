"""Helpers for the build-ids tests: a small processed dataset written straight to disk (tables per
ARCHITECTURE.md, manifest through the plumbing), plus checks that the helper itself is sound."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from gdr_cli.io import write_parquet
from gdr_cli.manifest import Manifest, write_manifest
from gdr_cli.paths import DataPaths

GENRES = ["action space laser", "romance love paris", "horror ghost night", "comedy laugh party", "war soldier battle"]


def write_processed(
    root: Path,
    dataset: str = "toy",
    *,
    n_users: int = 60,
    n_items: int = 40,
    length: int = 8,
    seed: int = 0,
    social: bool = True,
    text_missing: int = 3,
    heldout_shift: int = 0,
) -> DataPaths:
    """Write `<root>/<dataset>/processed/` for a synthetic catalogue with genre-clustered items.

    Users mostly interact within one genre, so co-occurrence carries structure. `heldout_shift`
    changes only the valid/test items (for leakage tests). Friends are users of the same genre.
    """
    rng = np.random.default_rng(seed)
    paths = DataPaths(root, dataset)
    genre_of_item = np.arange(n_items) % len(GENRES)
    users = np.arange(n_users)
    user_genre = users % len(GENRES)
    seqs = []
    for u in users:  # test-data construction, not library code
        pool = np.flatnonzero(genre_of_item == user_genre[u])
        other = rng.integers(n_items, size=length)
        own = rng.choice(pool, size=length)
        seqs.append(np.where(rng.random(length) < 0.8, own, other))
    train = [s[:-2].tolist() for s in seqs]
    valid = [(int(s[-2]) + heldout_shift) % n_items for s in seqs]
    test = [(int(s[-1]) + 2 * heldout_shift) % n_items for s in seqs]
    full = [[*t, v, te] for t, v, te in zip(train, valid, test, strict=True)]
    inter = pl.DataFrame(
        {
            "user": np.repeat(users, length).astype(np.int32),
            "item": np.concatenate(full).astype(np.int32),
            "timestamp": np.tile(np.arange(length), n_users).astype(np.int64),
        }
    )
    texts = [f"movie {i} {GENRES[genre_of_item[i]]}" if i >= text_missing else None for i in range(n_items)]
    folder = paths.processed
    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(folder / "interactions.parquet", inter)
    write_parquet(
        folder / "items.parquet",
        pl.DataFrame(
            {"item": np.arange(n_items, dtype=np.int32), "raw_id": [f"i{i}" for i in range(n_items)], "text": texts}
        ),
    )
    write_parquet(
        folder / "users.parquet", pl.DataFrame({"user": users.astype(np.int32), "raw_id": [f"u{u}" for u in users]})
    )
    write_parquet(
        folder / "splits.parquet",
        pl.DataFrame(
            {"user": users.astype(np.int32), "train": train, "valid": valid, "test": test},
            schema={"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
        ),
    )
    src, dst = [], []
    if social:
        for u in users:
            mates = users[(user_genre == user_genre[u]) & (users != u)][:5]
            src += [u] * len(mates)
            dst += mates.tolist()
    edges = pl.DataFrame({"user": src, "friend": dst}, schema={"user": pl.Int32, "friend": pl.Int32})
    write_parquet(folder / "social.parquet", edges)
    friends = edges.group_by("user", maintain_order=True).agg(pl.col("friend"))
    friends = friends.filter(pl.col("friend").list.len() >= 3)
    write_parquet(
        folder / "social_splits.parquet",
        friends.select(
            "user",
            pl.col("friend").list.slice(0, pl.col("friend").list.len() - 2).alias("train"),
            pl.col("friend").list.get(-2).alias("valid"),
            pl.col("friend").list.get(-1).alias("test"),
        ),
    )
    manifest = Manifest(
        stage="preprocess",
        dataset=dataset,
        name=dataset,
        command=f"gdr preprocess synthetic --name {dataset}",
        seed=seed,
        stats={"users": n_users, "items": n_items, "interactions": inter.height},
    )
    write_manifest(folder, manifest)
    return paths


def test_helper_writes_consistent_tables(tmp_path: Path) -> None:
    paths = write_processed(tmp_path)
    splits = pl.read_parquet(paths.processed / "splits.parquet")
    assert splits.schema["train"] == pl.List(pl.Int32)
    assert splits.height == 60
    social = pl.read_parquet(paths.processed / "social_splits.parquet")
    assert social.height > 0 and (social["train"].list.len() >= 1).all()
    assert (paths.processed / "manifest.json").exists()
