"""How the two models train each other (IDGenRec's alternating rounds), as the modules `fit` trains.

    phase "id":   SoftIds(gen, rec): the recommender (frozen, eval mode) reads the history's IDs as
                  soft embeddings, probs x its word-embedding matrix, where probs [U, L, W] are the
                  generator's teacher-forced word distributions of each history item's current ID;
                  its next-ID cross-entropy flows back through probs into the generator. Plus `anchor` x
                  the generator's cross-entropy on the current IDs: without it the generator drifts to
                  flat "blend" distributions that serve the soft input but whose argmax is the same
                  phrase for every entity (measured on Last.fm 2K: 1127 of 1152 users fell back).
    phase "rec":  the recommender alone on the hard IDs (its code table); the generator is frozen and
                  not in the graph, so nothing reaches it.
    phase "text": Keywords(gen): round 1, the generator learns each entity's keywords (cross-entropy).

Validation of phase "id" is the recommender's NDCG@10 with the soft history (the beam search still
decodes the current IDs under their trie), so the best generator state is the one that helps it most.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.idgen.generator import IdGenerator
from stages.models.tiger import Tiger


class SoftIds(nn.Module):
    """Generator round: loss = the frozen recommender's loss on soft history IDs."""

    def __init__(self, gen: IdGenerator, rec: Tiger, text: Tensor, temperature: float = 1.0, anchor: float = 0.0):
        super().__init__()
        self.gen, self.rec, self.temperature, self.anchor = gen, rec, temperature, anchor
        self.register_buffer("text", text, persistent=False)  # [N, T] word ids of every entity's text
        rec.requires_grad_(False)
        gen.requires_grad_(True)

    def train(self, mode: bool = True) -> SoftIds:
        super().train(mode)
        self.rec.eval()  # frozen: no dropout in the recommender
        return self

    def soft_history(self, history: Tensor) -> tuple[Tensor, Tensor]:
        """Soft ID embeddings of the history and the generator's cross-entropy on the current IDs of its items.
        history [B, Lh] (-1 = padding) -> ([B, Lh, L, d_model], scalar)."""
        uniq, inv = torch.unique(history.clamp(min=0), return_inverse=True)  # [U], [B, Lh]
        current = self.rec.codes[uniq]  # [U, L] word ids of the current IDs
        logits = self.gen.word_logits(self.text[uniq], current)  # [U, L, W]
        probs = (logits / self.temperature).softmax(-1)
        emb = probs.to(self.rec.word_embeddings().dtype) @ self.rec.word_embeddings()  # [U, L, d]
        return emb[inv], F.cross_entropy(logits.flatten(0, 1), current.flatten())

    def history_embeds(self, history: Tensor) -> Tensor:
        return self.soft_history(history)[0]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        embeds, ce = self.soft_history(batch["history"])
        loss = self.rec.loss({**batch, "history_embeds": embeds})
        return loss + self.anchor * ce if self.anchor else loss

    # the beam search's decoder interface: the soft-history encoder, the recommender's decoder
    @property
    def offsets(self) -> Tensor:
        return self.rec.offsets

    def encode(self, history: Tensor) -> tuple[Tensor, Tensor]:
        return self.rec.encode(history, self.history_embeds(history))

    def start_decoding(self, *args: Any, **kwargs: Any) -> Any:
        return self.rec.start_decoding(*args, **kwargs)

    def next_logprobs(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.rec.next_logprobs(*args, **kwargs)

    def decode_step(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.rec.decode_step(*args, **kwargs)

    @torch.no_grad()
    def recommend(self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None,
                  exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        return self.rec.search(self, history, self.encode(history), k=k, options=options, exclude=exclude)


class Keywords(nn.Module):
    """Round 1's generator phase: cross-entropy of each entity's keyword target."""

    def __init__(self, gen: IdGenerator, text: Tensor, targets: Tensor):
        super().__init__()
        self.gen = gen
        self.register_buffer("text", text, persistent=False)  # [N, T]
        self.register_buffer("targets", targets, persistent=False)  # [N, L]
        gen.requires_grad_(True)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        e = batch["entity"]
        logits = self.gen.word_logits(self.text[e], self.targets[e])  # [B, L, W]
        return F.cross_entropy(logits.flatten(0, 1), self.targets[e].flatten())

    @torch.no_grad()
    def accuracy(self, entities: Tensor) -> tuple[float, int]:
        """(sum over `entities` of the share of keyword positions predicted right (teacher-forced), count)."""
        logits = self.gen.word_logits(self.text[entities], self.targets[entities])
        return float((logits.argmax(-1) == self.targets[entities]).float().mean(1).sum()), int(entities.numel())


def round_model(phase: str, gen: IdGenerator, rec: Tiger | None, text: Tensor, *, temperature: float = 1.0,
                anchor: float = 0.0, targets: Tensor | None = None) -> nn.Module:  # fmt: skip
    """The module `fit` trains in `phase` ('text', 'id' or 'rec'), with the other model frozen."""
    if phase == "text":
        assert targets is not None
        return Keywords(gen, text, targets)
    assert rec is not None
    if phase == "id":
        return SoftIds(gen, rec, text, temperature, anchor)
    if phase == "rec":
        gen.requires_grad_(False)
        rec.requires_grad_(True)
        return rec
    raise ValueError(f"unknown phase {phase!r}")
