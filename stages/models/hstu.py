"""HSTU (Zhai et al., 2024, "Actions Speak Louder than Words"): causal blocks of pointwise aggregated
attention with a gated output, over the embeddings of a user's recent items.

    [B, L] items -> item * sqrt(d) + position embeddings -> dropout
    -> n_layers x block:
         u, v, q, k = SiLU(Linear(LN(x)))                          (each [B, L, d], heads of d / H)
         A = SiLU(q k^T + rab) / L, causal, padding keys zeroed     (no softmax: pointwise)
         x += Linear(drop(LN(A v) * u))
    -> L2-normalised query per position; score = cosine with the tied item table

rab is a learned relative position bias: one value per head and per distance i - j (0..L-1).
HSTU also adds a relative *time* bias (bucketed log time gaps); it is omitted here because the
histories gdr feeds models (splits.parquet) carry item ids only, not timestamps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.config.seqrec import HstuConfig, SeqrecTrainConfig
from stages.models.family import FamilyData, ModelFamily
from stages.models.seqrec import SeqRecommender, init_weights, repeat_kwargs, window_examples


class HstuBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, max_len: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.norm = nn.LayerNorm(d_model)
        self.uvqk = nn.Linear(d_model, 4 * d_model)
        self.rel_bias = nn.Embedding(max_len, n_heads)  # [distance, head]
        self.out_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, distance: Tensor) -> Tensor:
        """x [B, L, d], mask [B, 1, L, L] float (1 = query i may see key j), distance [L, L] int64 (i - j, clamped)."""
        b, length, d = x.shape
        h = self.n_heads
        u, v, q, k = F.silu(self.uvqk(self.norm(x))).chunk(4, dim=-1)  # each [B, L, d]
        q, k, v = (t.view(b, length, h, d // h).transpose(1, 2) for t in (q, k, v))  # [B, H, L, d/H]
        bias = self.rel_bias(distance).permute(2, 0, 1)  # [H, L, L]
        att = F.silu(q @ k.transpose(-1, -2) + bias) * mask / length  # [B, H, L, L]
        y = (self.drop(att) @ v).transpose(1, 2).reshape(b, length, d)
        return x + self.out(self.drop(self.out_norm(y) * u))


class Hstu(SeqRecommender):
    kind: ClassVar[str] = "hstu"

    def __init__(
        self,
        *,
        n_items: int,
        max_len: int = 50,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        dropout: float = 0.2,
        loss: str = "softmax",
        temperature: float = 0.05,
        num_negatives: int = 128,
        repeat_head: bool = False,
        repeat_explore: str = "new",
        seed: int = 0,
    ):
        super().__init__(n_items=n_items, max_len=max_len, d_model=d_model, n_heads=n_heads, loss=loss,
                         temperature=temperature, num_negatives=num_negatives, dropout=dropout, seed=seed,
                         n_layers=n_layers, **repeat_kwargs(repeat_head, repeat_explore))  # fmt: skip
        self.blocks = nn.ModuleList(HstuBlock(d_model, n_heads, max_len, dropout) for _ in range(n_layers))
        init_weights(self, torch.Generator().manual_seed(seed))

    def encode(self, history: Tensor) -> Tensor:
        length = history.shape[1]
        pos = torch.arange(length, device=history.device)
        distance = pos[:, None] - pos[None, :]  # [L, L] i - j
        mask = ((distance >= 0) & (history >= 0)[:, None, :])[:, None].to(self.item_emb.weight.dtype)  # [B, 1, L, L]
        x = self.embed(history)
        for block in self.blocks:
            x = block(x, mask, distance.clamp(min=0))
        return x


class HstuFamily(ModelFamily):
    """HSTU trained on whole windows (a loss at every position) with the shared loop."""

    kind: ClassVar[str] = "hstu"
    config: ClassVar[type[HstuConfig]] = HstuConfig
    train_config: ClassVar[type[SeqrecTrainConfig]] = SeqrecTrainConfig
    default_max_len: ClassVar[int] = 50

    def build(self, data: FamilyData, cfg: Any) -> Hstu:
        return Hstu(
            n_items=data.n_items,
            max_len=data.max_len,
            seed=data.seed,
            **cfg.model_dump(exclude={"window_overlap", "train"}),
        )

    def examples(self, data: FamilyData, cfg: Any) -> dict[str, Tensor]:
        return window_examples(data, int(cfg.window_overlap * data.max_len))
