"""Repeat or explore (RepeatNet, Ren et al. 2019) for a code generator: the generative models' `repeat_head`.

A user often returns to an item already in their history (music, groceries); a generator that writes codes
digit by digit must re-derive such an item's code from a summed input. The head adds a second expert that
points at the history directly, and mixes the two per user:

    q = the encoder state at the latest item, h_j = the state at history item j        # [B, d], [B, L, d]
    gate g = sigmoid(w . q + b)                                                         # [B]  P(repeat)
    attention a_j = softmax_j((W q) . h_j / sqrt(d)) over the real history items        # [B, L]
    p(item) = (1 - g) p_gen(code of item) + g sum_{j: history_j = item} a_j

Training minimises -log p(target) / D (the generator's per-digit scale). Decoding (`CopyPrior` in the beam
search) ranks every prefix by the same mixture: p_mix(prefix) = (1 - g) p_gen(prefix) + g sum of a_j over
history items whose code starts with that prefix, so each finished beam scores its item's p(item) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdr_cli.errors import GdrError


def explore_new(repeat_explore: str, repeat_head: bool, key: str = "repeat_explore") -> bool:
    """Whether the generator is RepeatNet's explore expert over new items only (`repeat_explore: new`); a user
    error for an unknown setting or 'new' without a repeat head (`key` names the setting in the message)."""
    if repeat_explore not in ("all", "new") or (repeat_explore == "new" and not repeat_head):
        raise GdrError(f"{key} {repeat_explore!r} needs a repeat head", fix=f"set {key.replace('repeat_explore', 'repeat_head')}=true, "
                       f"or {key}=all (the generator covers every item)")  # fmt: skip
    return repeat_explore == "new"


NEG = -1e9
"""Log-weight of "no such history item": finite, so no row (e.g. an empty history) makes a NaN gradient."""
TINY = 1e-30
"""Attention mass standing for "none" in the beam's log-space mixture."""


class RepeatHead(nn.Module):
    """Gate and history attention of the repeat expert (the explore expert is the generator itself)."""

    def __init__(self, d_model: int):
        super().__init__()
        self.gate = nn.Linear(d_model, 1)
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.scale = d_model**-0.5

    def forward(self, latest: Tensor, states: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """latest [B, d], states [B, L, d] of the history items, valid [B, L] bool ->
        (log(1 - g) [B], log g [B], log a [B, L] float32, NEG where not valid; an empty history has g = 0)."""
        logit = self.gate(latest).squeeze(-1).float()  # [B]
        score = (states @ self.query(latest)[:, :, None]).squeeze(-1).float() * self.scale  # [B, L]
        log_a = score.masked_fill(~valid, NEG).log_softmax(-1).masked_fill(~valid, NEG)
        some = valid.any(-1)  # [B]; a user without history is all explore (g = 0)
        log_explore = torch.where(some, F.logsigmoid(-logit), 0.0)
        return log_explore, torch.where(some, F.logsigmoid(logit), NEG), log_a

    @staticmethod
    def mix_nll(gen_logp: Tensor, log_explore: Tensor, log_repeat: Tensor, log_a: Tensor, history: Tensor,
                target: Tensor) -> Tensor:  # fmt: skip
        """-log p(target) [B] from the generator's code log-prob gen_logp [B] and the repeat expert's
        pointer: log_a [B, L] over history [B, L] item ids; target [B] item ids."""
        log_copy, _ = pointer_logp(log_a, history, target)
        return -torch.logaddexp(log_explore + gen_logp, log_repeat + log_copy)


def pointer_logp(log_a: Tensor, history: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """log of the pointer's mass on target [B] (log_a [B, L] over history [B, L]; ~NEG when the target is not
    in the history) and whether it is there -> ([B] float32, [B] bool)."""
    hit = history == target[:, None]  # [B, L] positions holding the target
    return log_a.masked_fill(~hit, NEG).logsumexp(-1), hit.any(-1)


def mode_nll(log_explore: Tensor, log_repeat: Tensor, log_a: Tensor, history: Tensor, target: Tensor) -> Tensor:
    """RepeatNet's factorised loss, for generators without a code log-prob (the diffusion model): -log g -
    log(pointer mass of the target) when the target is in the history, else -log(1 - g). -> [B]."""
    log_copy, repeats = pointer_logp(log_a, history, target)
    return torch.where(repeats, -(log_repeat + log_copy), -log_explore)


@torch.no_grad()
def mix_lists(items: Tensor, scores: Tensor, history: Tensor, heads: tuple[Tensor, Tensor, Tensor],
              allowed: Tensor) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Item-level mixture over a generator's list and the history: items [B, K] (-1 = none) with log-probs
    scores [B, K], history [B, L], heads = (log(1 - g), log g, log a) -> candidates [B, K + L] and their
    mixture log-probs [B, K + L] (-inf for padding and for history items not `allowed` [B, L] bool; an item in
    both keeps its generator score too; duplicates stay, for `top_distinct`). A history item the generator
    did not list gets its repeat mass alone."""
    log_explore, log_repeat, log_a = heads
    cand = torch.cat([items, history.masked_fill(~allowed, -1)], 1)  # [B, C]
    listed = cand[:, :, None] == items[:, None, :]  # [B, C, K]
    gen = scores[:, None, :].expand_as(listed).masked_fill(~listed, float("-inf")).amax(-1)  # [B, C]
    hit = (cand[:, :, None] == history[:, None, :]) & (history >= 0)[:, None, :]  # [B, C, L]
    copy = log_a[:, None, :].expand_as(hit).masked_fill(~hit, NEG).logsumexp(-1)  # [B, C]
    mix = torch.logaddexp(log_explore[:, None] + gen, log_repeat[:, None] + copy)
    return cand, mix.masked_fill(cand < 0, float("-inf"))


@dataclass
class CopyPrior:
    """The repeat expert inside a beam search over codes (one user per row).

    log_explore, log_repeat: [B] log(1 - g), log g; log_a: [B, L] log attention over history items;
    digits: [B, L, D] int64 the history items' codes (digit values, not tokens). explore_new: the generator's
    mass covers items outside the history only (`repeat_explore: new`): a finished code of a history item scores
    its repeat mass alone."""

    log_explore: Tensor
    log_repeat: Tensor
    log_a: Tensor
    digits: Tensor
    explore_new: bool = False

    def start(self) -> Tensor:
        """[B, 1, L] bool: which history items each beam's (empty) prefix still matches."""
        return (self.log_a > NEG / 2)[:, None]

    def candidates(self, d: int, match: Tensor, vocab: int) -> Tensor:
        """log of the attention mass of the history items that each (beam, digit d = v) prefix matches:
        match [B, W, L] bool -> [B, W, V_d] float32 (log TINY where none)."""
        mass = self.log_a.exp()[:, None] * match  # [B, W, L] attention of the matching history items
        onehot = F.one_hot(self.digits[:, :, d], vocab).to(mass.dtype)  # [B, L, V_d] each item's digit d
        # TINY instead of 0: log(0) takes a slow path on CPU (20x a plain log); e^-69 changes no ranking
        return torch.bmm(mass, onehot).clamp_min_(TINY).log_()

    def history_leaves(self, d: int, match: Tensor, vocab: int) -> Tensor:
        """Which (beam, digit d = v) candidates complete a history item's code (d the last digit): match [B, W, L]
        bool -> [B, W, V_d] bool."""
        onehot = F.one_hot(self.digits[:, :, d], vocab).to(torch.float32)  # [B, L, V_d]
        return torch.bmm(match.to(torch.float32), onehot) > 0

    def advance(self, d: int, match: Tensor, parent: Tensor, digit: Tensor) -> Tensor:
        """Matches after step d: beams `parent` [B, W] extended by `digit` [B, W] -> [B, W, L] bool."""
        kept = match.gather(1, parent[..., None].expand(-1, -1, match.shape[2]))
        return kept & (self.digits[:, None, :, d] == digit[..., None])

    def mix(self, gen: Tensor, copy: Tensor) -> Tensor:
        """Mixture log-prob of prefixes from generative gen [B, W, V] and copy [B, W, V] log-masses."""
        return torch.logaddexp(self.log_explore[:, None, None] + gen, self.log_repeat[:, None, None] + copy)
