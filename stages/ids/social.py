"""User embeddings for the social view: spectral vectors of the friend graph + the user's training items.

Only the friends in `social_splits.train` (and items in `splits.train`) are used, so codes built
here never see the held-out friends or items that friend/item recommendation is scored on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from stages.ids.collab import ragged
from stages.ids.vectors import normalize, svd_embed


def friend_adjacency(users: np.ndarray, friends: Any, n_users: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency [n_users, n_users] of the training friend lists, no self-loops."""
    vals, owner = ragged(friends)
    src = np.asarray(users, dtype=np.int64)[owner]
    keep = src != vals
    r = np.concatenate([src[keep], vals[keep]])
    c = np.concatenate([vals[keep], src[keep]])
    adj = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n_users, n_users)).tocsr()
    adj.data[:] = 1.0
    return adj


def spectral_embeddings(adj: sp.csr_matrix, *, dim: int, seed: int) -> np.ndarray:
    """Unit rows [N, dim] of the top singular vectors of D^-1/2 A D^-1/2 (isolated users: zero rows)."""
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.divide(1.0, np.sqrt(deg), out=np.zeros_like(deg), where=deg > 0)
    norm = sp.diags(inv) @ adj @ sp.diags(inv)
    return normalize(svd_embed(norm.tocsr(), dim, seed))


def interaction_embeddings(users: np.ndarray, train: Any, item_emb: np.ndarray, n_users: int) -> np.ndarray:
    """Unit rows [n_users, d]: the mean vector of each user's training items (zero for users without any)."""
    items, owner = ragged(train)
    sums = np.zeros((n_users, item_emb.shape[1]), dtype=np.float64)
    np.add.at(sums, np.asarray(users, dtype=np.int64)[owner], item_emb[items])
    return normalize(sums)


def user_embeddings(social: np.ndarray, interactions: np.ndarray) -> np.ndarray:
    """[N, d_s + d_i] unit rows: the two unit parts side by side, weighted equally."""
    return normalize(np.concatenate([social, interactions], axis=1))
