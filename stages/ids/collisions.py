"""Make codes unique: TIGER's extra final digit numbers the items that share a semantic code."""

from __future__ import annotations

import numpy as np


def disambiguate(sem: np.ndarray) -> tuple[np.ndarray, dict[str, float | int]]:
    """Append a digit 0, 1, 2, ... within each group of rows of sem [N, L] that are equal.

    Returns (codes [N, L + 1] int64, all rows distinct; stats). Within a group, rows keep their
    index order (item 3 before item 7). `collision_rate` = 1 - distinct codes / N, before and
    after the extra digit; `max_collisions` = the largest group, which is the last digit's vocab.
    """
    sem = np.asarray(sem, dtype=np.int64)
    n = sem.shape[0]
    _, group, counts = np.unique(sem, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.lexsort((np.arange(n), group))  # by group, then index
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # first position of each group in `order`
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[group[order]]
    codes = np.concatenate([sem, rank[:, None]], axis=1)
    n_unique_after = len(np.unique(codes, axis=0)) if n else 0
    assert n_unique_after == n, "disambiguated codes must be unique"
    stats = {
        "collision_rate_before": round(1.0 - len(counts) / n, 6) if n else 0.0,
        "collision_rate_after": round(1.0 - n_unique_after / n, 6) if n else 0.0,
        "max_collisions": int(counts.max()) if n else 0,
        "colliding_items": int(counts[counts > 1].sum()),
    }
    return codes, stats
