"""SASRec (Kang & McAuley, 2018): a causal Transformer over the embeddings of a user's recent items.

    [B, L] items -> item * sqrt(d) + position embeddings -> dropout
    -> n_layers x pre-norm block:  x += drop(attn(LN(x)));  x += drop(FFN(LN(x)))    (GELU FFN)
    -> LN -> L2-normalised query per position; score = cosine with the tied item table

Attention is causal and never looks at padding (a padded position attends to itself only, so no
row is empty). Everything else (losses, top-K, windows) is in `stages/models/seqrec.py`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from stages.config.seqrec import SasrecConfig, SeqrecTrainConfig
from stages.models.family import FamilyData, ModelFamily
from stages.models.fast_dropout import attention
from stages.models.seqrec import SeqRecommender, init_weights, repeat_kwargs, window_examples


def causal_mask(history: Tensor) -> Tensor:
    """[B, L] items -> [B, 1, L, L] bool: query i may see key j <= i that is an item, and always itself."""
    length = history.shape[1]
    tril = torch.ones(length, length, dtype=torch.bool, device=history.device).tril()
    return (tril & (history >= 0)[:, None, :] | torch.eye(length, dtype=torch.bool, device=history.device))[:, None]


class SasrecBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B, L, d], mask [B, 1, L, L] bool -> [B, L, d]."""
        b, length, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, length, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        att = attention(q, k, v, mask, self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, length, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class Sasrec(SeqRecommender):
    kind: ClassVar[str] = "sasrec"

    def __init__(
        self,
        *,
        n_items: int,
        max_len: int = 50,
        d_model: int = 64,
        n_layers: int = 2,
        n_heads: int = 2,
        d_ff: int = 256,
        dropout: float = 0.5,
        loss: str = "softmax",
        temperature: float = 0.05,
        num_negatives: int = 128,
        repeat_head: bool = False,
        repeat_explore: str = "new",
        seed: int = 0,
    ):
        super().__init__(n_items=n_items, max_len=max_len, d_model=d_model, n_heads=n_heads, loss=loss,
                         temperature=temperature, num_negatives=num_negatives, dropout=dropout, seed=seed,
                         n_layers=n_layers, d_ff=d_ff, **repeat_kwargs(repeat_head, repeat_explore))  # fmt: skip
        self.blocks = nn.ModuleList(SasrecBlock(d_model, n_heads, d_ff, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        init_weights(self, torch.Generator().manual_seed(seed))

    def encode(self, history: Tensor) -> Tensor:
        x = self.embed(history)
        mask = causal_mask(history)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class SasrecFamily(ModelFamily):
    """SASRec trained on whole windows (a loss at every position) with the shared loop."""

    kind: ClassVar[str] = "sasrec"
    config: ClassVar[type[SasrecConfig]] = SasrecConfig
    train_config: ClassVar[type[SeqrecTrainConfig]] = SeqrecTrainConfig
    default_max_len: ClassVar[int] = 50

    def prepare(self, data: FamilyData, cfg: Any, paths: Any, processed: Any) -> dict[str, Any]:
        if cfg.plugin != "pdrec":
            return {}
        from stages.models.pdrec import prepare_pdrec

        data.extra["pdrec"], refs = prepare_pdrec(paths, processed, data, cfg.pdrec)
        return refs

    def build(self, data: FamilyData, cfg: Any) -> Sasrec:
        model = Sasrec(n_items=data.n_items, max_len=data.max_len, seed=data.seed,
                       **cfg.model_dump(exclude={"window_overlap", "train", "plugin", "pdrec"}))  # fmt: skip
        if cfg.plugin == "pdrec":
            model.plugin_items = data.extra["pdrec"]["signals"].items
            model.plugin_beta = cfg.pdrec.positive_weight
        return model

    def examples(self, data: FamilyData, cfg: Any) -> dict[str, Tensor]:
        min_history = int(cfg.window_overlap * data.max_len)
        if cfg.plugin != "pdrec":
            return window_examples(data, min_history)
        from stages.models.pdrec import pdrec_windows

        plug = data.extra["pdrec"]
        out = pdrec_windows(data.splits, plug["signals"], plug["weights"], cfg.pdrec, data.max_len,
                            data.max_len - min_history)  # fmt: skip
        if min_history:
            out["context"] = torch.full((out["seq"].shape[0],), min_history, dtype=torch.int64)
        return out
