"""Collaborative item embeddings from the TRAINING split only: windowed co-occurrence -> PPMI -> SVD.

Only `splits.train` lists are read, never the validation or test items, so codes built from
these vectors cannot leak held-out interactions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from stages.ids.vectors import normalize, random_unit, svd_embed


def ragged(lists: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ragged lists (a polars list Series or a Python list of lists) -> (values [T] int64, row [T] int64)."""
    if isinstance(lists, pl.Series):
        lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        values = lists.explode().drop_nulls().to_numpy().astype(np.int64)
    else:
        lengths = np.fromiter((len(s) for s in lists), dtype=np.int64, count=len(lists))
        values = (
            np.concatenate([np.asarray(s, dtype=np.int64) for s in lists]) if lengths.sum() else np.zeros(0, np.int64)
        )
    return values, np.repeat(np.arange(len(lengths)), lengths)


def cooccurrence(train: Any, n_items: int, window: int) -> sp.csr_matrix:
    """Symmetric [n_items, n_items] counts of item pairs at most `window` apart in a training sequence."""
    items, owner = ragged(train)
    rows, cols = [], []
    for off in range(1, window + 1):  # loop over offsets only; pairs are vectorised
        same = owner[off:] == owner[:-off]
        rows.append(items[:-off][same])
        cols.append(items[off:][same])
    r = np.concatenate([*rows, *cols]) if rows else np.zeros(0, np.int64)
    c = np.concatenate([*cols, *rows]) if cols else np.zeros(0, np.int64)
    m = sp.coo_matrix((np.ones(len(r), np.float64), (r, c)), shape=(n_items, n_items)).tocsr()
    m.sum_duplicates()
    return m


def ppmi(counts: sp.csr_matrix) -> sp.csr_matrix:
    """Positive pointwise mutual information of a symmetric count matrix (sparse in, sparse out)."""
    counts = counts.tocoo()
    total = counts.sum()
    if total == 0:
        return sp.csr_matrix(counts.shape)
    marg = np.asarray(counts.sum(1)).ravel()
    pmi = np.log(counts.data * total / (marg[counts.row] * marg[counts.col]))
    keep = pmi > 0
    return sp.coo_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=counts.shape).tocsr()


def collab_embeddings(
    train: Any, n_items: int, *, dim: int, window: int, seed: int, fill_empty: bool = True
) -> tuple[np.ndarray, int]:
    """Unit item vectors [n_items, dim] from training co-occurrence, and how many items had none.

    Items never co-occurring in training get seeded random unit vectors (they depend on the item
    index and seed only, never on held-out data), or stay zero with `fill_empty=False`.
    """
    emb = normalize(svd_embed(ppmi(cooccurrence(train, n_items, window)), dim, seed))
    empty = np.linalg.norm(emb, axis=1) == 0
    if empty.any() and fill_empty:
        emb[empty] = random_unit(n_items, dim, seed + 1)[empty]
    return emb, int(empty.sum())
