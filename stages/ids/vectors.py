"""Small numeric helpers shared by the embedding sources: seeded truncated SVD and row normalisation."""

from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows of x [N, D] scaled to unit L2 norm (zero rows stay zero); float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def svd_embed(matrix, dim: int, seed: int) -> np.ndarray:
    """Rows of a (sparse) matrix [N, M] -> U·sqrt(S) [N, dim] by seeded randomized SVD.

    When the matrix has rank room for fewer than `dim` components, the rest are zero columns,
    so callers always get `dim` columns.
    """
    from sklearn.utils.extmath import randomized_svd

    n, m = matrix.shape
    k = max(0, min(dim, n - 1, m - 1))
    out = np.zeros((n, dim), dtype=np.float32)
    if k == 0 or getattr(matrix, "nnz", 1) == 0:
        return out
    u, s, _ = randomized_svd(matrix, n_components=k, n_iter=5, random_state=seed)
    out[:, :k] = u * np.sqrt(s)
    return out


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    """[n, dim] random unit vectors (seeded), for entities with no data to embed."""
    rng = np.random.default_rng(seed)
    return normalize(rng.standard_normal((n, dim)))
