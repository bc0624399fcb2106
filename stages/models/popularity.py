"""Most-popular baseline: every user gets the items with the most training interactions.

The floor every other model must beat. Counts come from the training split only (validation
and test items never leak in); ties break by the smaller item id, so lists are deterministic.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from stages.models.base import Recommender


def exclude_items(score: Tensor, history: Tensor) -> Tensor:
    """Set the scores of each user's history items to -inf.

    score: [B, N] float; history: [B, L] int64 item ids, -1 = padding. Returns a new [B, N] tensor.
    """
    b, n = score.shape
    wide = torch.cat([score, score.new_zeros(b, 1)], dim=1)  # [B, N+1]; column N absorbs padding
    idx = torch.where(history >= 0, history, n)
    wide = wide.scatter(1, idx, float("-inf"))
    return wide[:, :n]


class Popularity(Recommender):
    kind: ClassVar[str] = "pop"
    samplers: ClassVar[tuple[str, ...]] = ("topk",)

    def __init__(self, n_items: int):
        super().__init__(n_items=n_items)
        self.register_buffer("counts", torch.zeros(n_items, dtype=torch.float32))  # [N]

    def fit_counts(self, train_items: Tensor) -> None:
        """train_items: [M] int64, every item occurrence in the training sequences."""
        self.counts.zero_()
        self.counts.index_add_(0, train_items, torch.ones_like(train_items, dtype=torch.float32))

    @torch.no_grad()
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        self.check_sampler(sampler)
        b = history.shape[0]
        n = self.counts.shape[0]
        # Break ties by item id: a tiny decreasing offset keeps the sort stable and deterministic.
        score = self.counts - torch.arange(n, dtype=torch.float32, device=self.counts.device) / (n + 1)
        score = score.expand(b, n)  # [B, N]
        if exclude is not None:
            score = exclude_items(score, exclude)
        kk = min(k, n)
        top, items = score.topk(kk, dim=1)  # [B, kk]
        counts = self.counts[items]
        counts = torch.where(torch.isinf(top), float("-inf"), counts)
        items = torch.where(torch.isinf(top), -1, items)
        if kk < k:
            pad = k - kk
            items = torch.cat([items, items.new_full((b, pad), -1)], 1)
            counts = torch.cat([counts, counts.new_full((b, pad), float("-inf"))], 1)
        return items, counts
