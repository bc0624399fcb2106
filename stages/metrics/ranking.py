"""Ranking metrics for one held-out item per user (PROTOCOL.md §1).

With r the 1-based rank of the target in the user's deduplicated list of valid items:
Recall@K = HR@K = 1[r <= K], NDCG@K = 1/log2(r+1) if r <= K, MRR@K = 1/r if r <= K; users whose
list misses the target (or is empty) score 0. The same function serves validation during
training (torch) and `gdr evaluate` (numpy, one value per user for the paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

DEFAULT_KS = (1, 5, 10, 20)


def target_rank(items: Tensor, target: Tensor) -> Tensor:
    """1-based rank of `target` in each row of `items`; 0 where absent.

    items: [B, K] int64 (-1 = empty slot; rows already free of duplicates), target: [B] int64.
    Returns [B] int64.
    """
    hit = items == target[:, None]  # [B, K]
    first = hit.float().argmax(dim=1) + 1
    return torch.where(hit.any(dim=1), first, torch.zeros_like(first))


def metrics_from_ranks(ranks: Tensor, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, float]:
    """Mean Recall/NDCG/MRR@K over users from their target ranks ([U] int64, 0 = miss)."""
    r = ranks.double()
    found = ranks > 0
    out: dict[str, float] = {}
    for k in ks:
        hit = found & (ranks <= k)
        n = max(len(ranks), 1)
        out[f"recall@{k}"] = hit.double().sum().item() / n
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r)).sum().item() / n
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / r.clamp(min=1.0), torch.zeros_like(r)).sum().item() / n
    return out


def ndcg_sum(items: Tensor, target: Tensor, k: int = 10) -> float:
    """Sum over the batch of NDCG@k (for sharded validation: sum over ranks, divide by users)."""
    return ndcg_per_user(items, target, k).sum().item()


def ndcg_per_user(items: Tensor, target: Tensor, k: int = 10) -> Tensor:
    """NDCG@k of each row: items [B, K'] int64 (deduplicated), target [B] int64 -> [B] float64."""
    ranks = target_rank(items[:, :k], target).double()
    hit = ranks > 0
    return torch.where(hit, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))


def per_user_metrics(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Recall/NDCG/MRR@K of every user from their target ranks.

    ranks: [U] float64, 1-based rank of the target, `inf` where the list misses it (or is empty).
    Returns `{"recall@K": [U] float64, "ndcg@K": ..., "mrr@K": ...}` for each K; the mean of a vector
    is the PROTOCOL.md §1 metric, and the vectors are what the paired bootstrap resamples.
    """
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = r <= k
        safe = np.where(hit, r, 1.0)  # keeps log2/divide finite on misses
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(safe + 1.0), 0.0)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / safe, 0.0)
    return out
