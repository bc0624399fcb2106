"""What ID-embedding sequential recommenders (SASRec, HSTU) share: the item table, the losses and exact top-K.

    history [B, L] item ids (-1 = padding, left) -> item + position embeddings [B, L, d]
    -> causal encoder (the subclass) [B, L, d] -> L2-normalised query per position
    score(item) = cos(query, item embedding): the item table is tied between input and output.

Training batches are whole windows `{"seq": [B, L + 1]}` (stages.data.sequences.training_windows):
position i of seq[:, :-1] predicts seq[:, i + 1] wherever both are items (left padding ignored),
except the first `context` [B] positions when the batch has that column (overlapping windows). Batches of prefixes
`{"history": [B, L], "target": [B]}` (the base contract) train the last position only.

Losses (all over cosine scores / temperature):
    softmax          cross-entropy over the whole catalogue;
    sampled_softmax  the batch's other targets as negatives (plain: no log-Q correction), a negative
                     equal to the position's own target (accidental hit) masked out;
    negatives        `num_negatives` items drawn uniformly per position, hits masked likewise; the
                     draws come from a generator seeded by (seed, training step, rank), so a run is
                     reproducible and resumes exactly (the step counter is a buffer).

Recommendation is exact: scores against the whole catalogue, excluded items set to -inf first,
then top-k, so k distinct items come back whenever the catalogue minus the exclusions allows.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdr_cli.errors import GdrError
from stages.data.sequences import training_windows
from stages.models.base import Recommender
from stages.models.family import FamilyData
from stages.models.popularity import exclude_items
from stages.models.repeat_head import RepeatHead, explore_new
from stages.models.seq_repeat import mixture_nll, mixture_scores

LOSSES = ("softmax", "sampled_softmax", "negatives")
PLUGIN_COLUMNS = frozenset({"weight", "extra", "tail_pref", "tail_thr"})
"""Training-window columns a plug-in (PDRec) adds; `SeqRecommender.plugin_loss` reads them."""
INIT_STD = 0.02
"""Standard deviation of the truncated-normal initialisation (cut at 2 std), as BERT-style recommenders."""


# ----- losses ------------------------------------------------------------------------------------
def softmax_loss(query: Tensor, target: Tensor, items: Tensor, temperature: float) -> Tensor:
    """Mean cross-entropy over the catalogue. query [P, d], target [P] int64, items [N, d] (all normalised)."""
    return F.cross_entropy((query @ items.T).float() / temperature, target)


def in_batch_loss(query: Tensor, target: Tensor, items: Tensor, temperature: float) -> Tensor:
    """Sampled softmax with the batch's targets as negatives: position p scores every target of the
    batch; columns holding p's own item (other than p's) are masked. query [P, d], target [P]."""
    logits = (query @ items[target].T).float() / temperature  # [P, P], positive on the diagonal
    hit = target[:, None] == target[None, :]
    hit.fill_diagonal_(False)
    return F.cross_entropy(logits.masked_fill(hit, float("-inf")), torch.arange(len(target), device=target.device))


def negatives_loss(
    query: Tensor, target: Tensor, items: Tensor, temperature: float, num_negatives: int, generator: torch.Generator
) -> Tensor:
    """Softmax over the positive and `num_negatives` uniform draws per position (draws equal to the
    positive masked). query [P, d], target [P]; `generator` on the device of `items`."""
    neg = torch.randint(
        items.shape[0], (len(target), num_negatives), generator=generator, device=items.device
    )  # [P, k]
    pos = (query * items[target]).sum(-1, keepdim=True)  # [P, 1]
    negs = torch.einsum("pd,pkd->pk", query, items[neg]).masked_fill(neg == target[:, None], float("-inf"))
    logits = torch.cat([pos, negs], 1).float() / temperature  # [P, 1 + k]
    return F.cross_entropy(logits, torch.zeros(len(target), dtype=torch.int64, device=target.device))


def tail_draws(pref: Tensor, threshold: Tensor, k: int, generator: torch.Generator) -> Tensor:
    """k distinct items per row drawn uniformly from the tail {i: pref[b, i] <= threshold[b]} (rows whose tail
    has fewer than k items fill up with the lowest random keys outside it). pref [B, N], threshold [B] -> [B, k]."""
    keys = torch.rand(pref.shape, generator=generator, device=pref.device)
    keys = keys.masked_fill(pref > threshold[:, None], -1.0)  # outside the tail: drawn last
    return keys.topk(min(k, pref.shape[1]), dim=1).indices


# ----- initialisation and helpers -----------------------------------------------------------------
@torch.no_grad()
def init_weights(module: nn.Module, gen: torch.Generator) -> None:
    """Truncated normal (std 0.02) for embeddings and linear weights, zero biases, unit norms; from `gen`.
    Modules in definition order, so the same seed gives the same weights."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(m.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD, generator=gen)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


def fit_history(history: Tensor, length: int) -> Tensor:
    """Last `length` items of each row, left-padded with -1 to exactly `length`. [B, L'] -> [B, length]."""
    if history.shape[1] >= length:
        return history[:, history.shape[1] - length :]
    return F.pad(history, (length - history.shape[1], 0), value=-1)


def top_k(scores: Tensor, k: int, exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """Exact top-k of scores [B, N] after setting `exclude` [B, M] (-1 = padding) to -inf.
    Returns (items [B, k] int64, -1 where no item is left; scores [B, k] float32, -inf there)."""
    n = scores.shape[1]
    if exclude is not None:
        scores = exclude_items(scores, exclude)
    top, items = scores.float().topk(min(k, n), dim=1)
    items = torch.where(torch.isinf(top), -1, items)
    if k > n:
        items = F.pad(items, (0, k - n), value=-1)
        top = F.pad(top, (0, k - n), value=float("-inf"))
    return items, top


def repeat_kwargs(repeat_head: bool, repeat_explore: str) -> dict[str, Any]:
    """The repeat head's constructor arguments, absent when it is off (so older checkpoints' specs stay valid)."""
    return {"repeat_head": True, "repeat_explore": repeat_explore} if repeat_head else {}


def window_examples(data: FamilyData, min_history: int) -> dict[str, Tensor]:
    """Training windows of a family (`seq` [W, max_len + 1]) and, when they overlap, their `context` [W]:
    windows advance by max_len - min_history items, so every target sees >= min_history items of history."""
    if min_history >= data.max_len:
        raise GdrError(
            f"min_history {min_history} must be below max_len {data.max_len}", fix="lower min_history or raise max_len"
        )
    stride = data.max_len - min_history
    seq = training_windows(data.splits, data.max_len, stride)
    if not min_history:
        return {"seq": seq}
    return {"seq": seq, "context": torch.full((seq.shape[0],), min_history, dtype=torch.int64)}


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class SeqRecommender(Recommender, abc.ABC):
    """Item table (+ padding row), position table, the losses and exact top-K; subclasses give `encode`."""

    samplers: ClassVar[tuple[str, ...]] = ("topk",)

    def __init__(
        self,
        *,
        n_items: int,
        max_len: int,
        d_model: int,
        n_heads: int,
        loss: str,
        temperature: float,
        num_negatives: int,
        dropout: float,
        seed: int,
        **extra: Any,
    ):
        super().__init__(
            n_items=n_items,
            max_len=max_len,
            d_model=d_model,
            n_heads=n_heads,
            loss=loss,
            temperature=temperature,
            num_negatives=num_negatives,
            dropout=dropout,
            seed=seed,
            **extra,
        )
        if loss not in LOSSES:
            raise GdrError(f"unknown loss {loss!r}", fix=f"use one of: {', '.join(LOSSES)}")
        repeat_head = bool(extra.get("repeat_head", False))
        if repeat_head and loss != "softmax":
            raise GdrError(f"repeat_head needs the full softmax, not loss {loss!r}",
                           fix="set loss=softmax, or repeat_head=false")  # fmt: skip
        if d_model % n_heads:
            raise GdrError(
                f"d_model {d_model} is not divisible by n_heads {n_heads}", fix="make d_model a multiple of n_heads"
            )
        self.n_items, self.max_len, self.d_model, self.n_heads = n_items, max_len, d_model, n_heads
        self.loss_name, self.temperature, self.num_negatives, self.seed = loss, temperature, num_negatives, seed
        self.item_emb = nn.Embedding(n_items + 1, d_model, padding_idx=n_items)  # last row = padding
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))  # training steps of the 'negatives' loss
        self.plugin_items: Tensor | None = None  # [N, d'] a plug-in's item table (tail negatives); not saved
        self.plugin_beta = 0.0  # weight of a plug-in's soft positives; not saved
        self.repeat = RepeatHead(d_model) if repeat_head else None  # RepeatNet's repeat expert (seq_repeat.py)
        self.explore_new = repeat_head and explore_new(extra.get("repeat_explore", "new"), repeat_head)

    # ----- the encoder -----------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, history: Tensor) -> Tensor:
        """history [B, max_len] int64 (-1 = padding, left) -> hidden states [B, max_len, d] (causal: position i
        sees items 0..i only)."""

    def embed(self, history: Tensor) -> Tensor:
        """Item embeddings * sqrt(d) + learnable positions, then dropout. [B, L] -> [B, L, d]."""
        idx = torch.where(history >= 0, history, self.n_items)
        pos = self.pos_emb.weight[self.max_len - history.shape[1] :]  # [L, d]: the last position is the newest item
        return self.drop(self.item_emb(idx) * self.d_model**0.5 + pos)

    def queries(self, history: Tensor) -> Tensor:
        """L2-normalised outputs of every position. [B, L] -> [B, L, d]."""
        return F.normalize(self.encode(history), dim=-1)

    def item_vectors(self) -> Tensor:
        """L2-normalised item embeddings [N, d] (padding row left out)."""
        return F.normalize(self.item_emb.weight[: self.n_items], dim=-1)

    # ----- training --------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        if "seq" in batch:
            seq = batch["seq"]  # [B, L + 1]
            inputs, target = seq[:, :-1], seq[:, 1:]  # [B, L], [B, L]
            keep = (target >= 0) & (inputs >= 0)  # a real target after a real item (not a user's first)
            if "context" in batch:  # leading targets that an earlier window trains: history only here
                keep &= torch.arange(target.shape[1], device=seq.device) >= batch["context"][:, None]
        else:
            inputs = fit_history(batch["history"], self.max_len)  # [B, L]
            target = F.pad(batch["target"][:, None], (inputs.shape[1] - 1, 0), value=-1)  # [B, L]: the last only
            keep = target >= 0
        hidden = self.encode(inputs)  # [B, L, d], once: the repeat head reads the same states
        if "seq" in batch and len(PLUGIN_COLUMNS & batch.keys()):
            return self.plugin_loss(batch, F.normalize(hidden, dim=-1), target, keep)
        if self.repeat is not None:  # RepeatNet's mixture (seq_repeat.py) at the kept positions
            return mixture_nll(
                self.repeat, hidden, self.item_vectors(), self.temperature, inputs, target, keep, self.explore_new
            ).mean()
        query = F.normalize(hidden, dim=-1)
        query, target = query[keep], target[keep]  # [P, d], [P]
        if self.loss_name == "softmax":
            return softmax_loss(query, target, self.item_vectors(), self.temperature)
        items = F.normalize(self.item_emb.weight, dim=-1)  # rows gathered by the sampled losses
        if self.loss_name == "sampled_softmax":
            return in_batch_loss(query, target, items, self.temperature)
        return negatives_loss(query, target, items[: self.n_items], self.temperature, self.num_negatives,
                              self.negatives_generator())  # fmt: skip

    def plugin_loss(self, batch: dict[str, Tensor], query: Tensor, target: Tensor, keep: Tensor) -> Tensor:
        """Loss of whole windows with a training plug-in's columns (PDRec, `stages/models/pdrec.py`):
        `weight` [B, L] per-target loss weights (weighted mean), `extra` [B, k] soft positives of the window's
        last query (each weighted `plugin_beta`, -1 = none), `tail_pref` [B, d'] / `tail_thr` [B] negatives
        drawn from the items the plug-in scores <= the threshold (shared by a window's positions).
        Losses 'softmax' and 'negatives' only."""
        items = self.item_vectors()  # [N, d]
        b = target.shape[0]
        neg = None
        if self.loss_name == "negatives":
            gen = self.negatives_generator()
            if "tail_pref" in batch:
                pref = batch["tail_pref"] @ self.plugin_items.to(query.device).T  # [B, N] plug-in scores
                neg = tail_draws(pref, batch["tail_thr"], self.num_negatives, gen)
            else:
                neg = torch.randint(self.n_items, (b, self.num_negatives), generator=gen, device=query.device)
        if neg is None:  # full softmax: only the kept positions (half of a window is context)
            losses = torch.zeros(target.shape, dtype=torch.float32, device=query.device)
            losses[keep] = F.cross_entropy(
                (query[keep] @ items.T).float() / self.temperature, target[keep], reduction="none"
            )
        else:
            losses = self.window_losses(query, target.clamp(min=0), items, neg)  # [B, L]; padding masked by keep
        weight = batch["weight"] if "weight" in batch else torch.ones_like(losses)
        weight = weight * keep
        total = (losses * weight).sum() / weight.sum().clamp(min=1e-12)
        if "extra" in batch:
            extra = batch["extra"]  # [B, k]
            ex_keep = extra >= 0
            if bool(ex_keep.any()):
                q = query[:, -1:].expand(b, extra.shape[1], -1)  # [B, k, d]: the window's last query
                ex = self.window_losses(q, extra.clamp(min=0), items, neg)[ex_keep]
                total = total + self.plugin_beta * ex.mean()
        return total

    def window_losses(self, query: Tensor, target: Tensor, items: Tensor, neg: Tensor | None) -> Tensor:
        """Per-position losses [B, L] of queries [B, L, d] and targets [B, L] (>= 0); softmax over the catalogue
        `items` [N, d], or over the target and the window's negatives `neg` [B, k] (hits masked)."""
        if neg is None:
            logits = (query @ items.T).float() / self.temperature  # [B, L, N]
            return F.cross_entropy(logits.transpose(1, 2), target, reduction="none")
        pos = (query * items[target]).sum(-1, keepdim=True)  # [B, L, 1]
        negs = torch.einsum("bld,bkd->blk", query, items[neg])  # [B, L, k]
        negs = negs.masked_fill(neg[:, None, :] == target[..., None], float("-inf"))
        logits = torch.cat([pos, negs], -1).float() / self.temperature
        return F.cross_entropy(logits.transpose(1, 2), torch.zeros_like(target), reduction="none")

    def negatives_generator(self) -> torch.Generator:
        """Generator of this training step's negatives, seeded by (seed, step, rank); advances the step."""
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, int(self.draws), _rank()]).generate_state(2, np.uint32)
        if self.training:
            self.draws += 1
        return torch.Generator(self.item_emb.weight.device).manual_seed(int(state[0]) << 32 | int(state[1]))

    # ----- recommendation --------------------------------------------------------------------------
    def scores(self, history: Tensor) -> Tensor:
        """Cosine score of every item after each user's history. [B, L'] -> [B, N] float32."""
        query = self.queries(fit_history(history, self.max_len))[:, -1]  # [B, d]
        return (query @ self.item_vectors().T).float()

    @torch.no_grad()
    def recommend(
        self, history: Tensor, *, k: int, sampler: str | None = None, options: Any = None, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        self.check_sampler(sampler)
        if self.repeat is None:
            return top_k(self.scores(history), k, exclude)
        seq = fit_history(history, self.max_len)
        hidden = self.encode(seq)  # [B, L, d]
        logits = (F.normalize(hidden[:, -1], dim=-1) @ self.item_vectors().T).float() / self.temperature  # [B, N]
        return top_k(mixture_scores(self.repeat, hidden, logits, seq, self.explore_new), k, exclude)
