"""A dense retrieval head beside a generative model (LIGER, Yang et al. 2024): the generative models' `dense_weight`.

The encoder's state at the latest history item is projected to a query; an item's key is the sum of its
code-token embeddings / sqrt(D) (the generator's own embedding table, so the head adds only one d x d
matrix and no per-item parameters):

    query [B, d] = W h_latest        keys [N, d] = sum_d E[token_d(item)] / sqrt(D)
    dense log-probs [B, N] = log_softmax(query @ keys.T / sqrt(d))

Training adds `dense_weight` x the cross-entropy of the target item under that softmax (the whole catalogue,
as SASRec's CE loss). Decoding re-ranks the beam's candidates by generative log-prob + dense log-prob (a
product of the two experts): generation proposes, dense similarity orders (LIGER's hybrid retrieval).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ITEM_CHUNK = 65536
"""Items per block of the key table at decoding: memory stays bounded for catalogues of millions."""


class DenseHead(nn.Module):
    """Query projection of a dense next-item head; keys come from the caller's code-token embeddings."""

    def __init__(self, d_model: int):
        super().__init__()
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.scale = d_model**-0.5

    def logits(self, latest: Tensor, keys: Tensor) -> Tensor:
        """latest [B, d] encoder states at the latest item, keys [N, d] -> logits [B, N] float32."""
        return (self.query(latest) @ keys.T).float() * self.scale

    def loss(self, latest: Tensor, keys: Tensor, target: Tensor) -> Tensor:
        """Full-catalogue cross-entropy of target [B] int64 item ids."""
        return F.cross_entropy(self.logits(latest, keys), target)

    @torch.no_grad()
    def logprobs(self, latest: Tensor, key_fn, n_items: int, items: Tensor) -> Tensor:
        """Dense log-probs of `items` [B, M] (-1 = none: -inf) under the full-catalogue softmax, with keys made
        `ITEM_CHUNK` items at a time by key_fn(item ids [C]) -> [C, d]. -> [B, M] float32."""
        query = self.query(latest)  # [B, d]
        norm = torch.full((latest.shape[0],), float("-inf"), device=latest.device)  # running logsumexp [B]
        for lo in range(0, n_items, ITEM_CHUNK):
            ids = torch.arange(lo, min(lo + ITEM_CHUNK, n_items), device=latest.device)
            norm = torch.logaddexp(norm, ((query @ key_fn(ids).T).float() * self.scale).logsumexp(1))
        picked = (query[:, None] * key_fn(items.clamp(min=0))).sum(-1).float() * self.scale  # [B, M]
        return torch.where(items >= 0, picked - norm[:, None], float("-inf"))
