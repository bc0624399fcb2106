"""RepeatNet's repeat / explore mixture on an ID-embedding sequence model (SASRec, HSTU): `repeat_head`.

The generative models' head (`repeat_head.py`) on a model that scores the whole catalogue. At every position i
of a window (causal: the history is items 0..i), from the encoder states h:

    gate g_i = sigmoid(w . h_i + b); pointer a_ij = softmax_{j <= i}((W h_i) . h_j / sqrt(d))
    explore p_i(item) = softmax of the catalogue logits (cosine / temperature), over every item ('all') or over
                        the items not in 0..i ('new', RepeatNet's explore decoder)
    p_i(item) = (1 - g_i) p_i(item) + g_i sum_{j <= i: item_j = item} a_ij

'new' needs no [B, L, N] mask: the normaliser over the items outside the window is the catalogue's minus the
distinct window items' exp-logits, read with one [P, L] gather (P = the trained positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stages.models.repeat_head import NEG, RepeatHead


def pointer_terms(head: RepeatHead, hidden: Tensor, seq: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gate and causal pointer at every position: hidden [B, L, d], seq [B, L] items (-1 = padding) ->
    (log(1 - g) [B, L], log g [B, L], log a [B, L, L] float32 over j <= i real items, NEG elsewhere)."""
    length = seq.shape[1]
    logit = head.gate(hidden).squeeze(-1).float()  # [B, L]
    score = (head.query(hidden) @ hidden.transpose(1, 2)).float() * head.scale  # [B, L, L]
    causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
    allowed = causal & (seq >= 0)[:, None, :]  # [B, L, L]
    log_a = score.masked_fill(~allowed, NEG).log_softmax(-1).masked_fill(~allowed, NEG)
    some = allowed.any(-1)  # [B, L] positions with an item to point at
    return torch.where(some, F.logsigmoid(-logit), 0.0), torch.where(some, F.logsigmoid(logit), NEG), log_a


def window_mask(seq: Tensor) -> Tensor:
    """[B, L] items -> [B, L, L] bool: item j is in position i's window (j <= i) and is its first occurrence there."""
    length = seq.shape[1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril(-1)  # j' < j
    first = (seq >= 0) & ~((seq[:, :, None] == seq[:, None, :]) & earlier).any(-1)  # [B, L]
    return torch.ones(length, length, dtype=torch.bool, device=seq.device).tril() & first[:, None, :]


def explore_log_norm(logits: Tensor, window: Tensor, inside: Tensor | None) -> Tensor:
    """log of the explore softmax's normaliser at P positions: logits [P, N]; with `inside` [P, L] (the logits of
    the window's items, `window` [P, L] bool marking each distinct one), over the items outside the window only."""
    lse = logits.logsumexp(-1)  # [P]
    if inside is None:
        return lse
    log_inside = inside.masked_fill(~window, float("-inf")).logsumexp(-1)  # [P]
    share = (log_inside - lse).exp().clamp(max=1 - 1e-6)  # the window's share of the catalogue's mass
    return lse + torch.log1p(-share)


def mixture_nll(head: RepeatHead, hidden: Tensor, items: Tensor, temperature: float, seq: Tensor, target: Tensor,
                keep: Tensor, new: bool) -> Tensor:  # fmt: skip
    """-log p(target) at the kept positions -> [P]: hidden [B, L, d] encoder states, items [N, d] L2-normalised,
    seq [B, L] the input items, target [B, L] (>= 0 where kept), keep [B, L] bool (P of them). The catalogue
    logits are only built for the kept positions."""
    log_e, log_r, log_a = (t[keep] for t in pointer_terms(head, hidden, seq))  # [P], [P], [P, L]
    row = keep.nonzero()[:, 0]  # [P] the window of each kept position
    window_seq, tgt = seq[row], target[keep]  # [P, L], [P]
    logits = (F.normalize(hidden[keep], dim=-1) @ items.T).float() / temperature  # [P, N]
    hit = (window_seq == tgt[:, None]) & (log_a > NEG / 2)  # [P, L] positions of the window holding the target
    log_copy = log_a.masked_fill(~hit, NEG).logsumexp(-1)  # [P]
    inside = logits.gather(1, window_seq.clamp(min=0)) if new else None  # [P, L]
    gen = logits.gather(1, tgt[:, None]).squeeze(1) - explore_log_norm(logits, window_mask(seq)[keep], inside)
    if new:  # the explore expert has no mass on window items
        gen = gen.masked_fill(hit.any(-1), NEG)
    return -torch.logaddexp(log_e + gen, log_r + log_copy)


def mixture_scores(head: RepeatHead, hidden: Tensor, logits: Tensor, seq: Tensor, new: bool) -> Tensor:
    """log p(item) of every item after each window: hidden [B, L, d], logits [B, N] float32 at the last position,
    seq [B, L] -> [B, N] (finite everywhere: a window item keeps its repeat mass however small the gate)."""
    log_e, log_r, log_a = (t[:, -1] for t in pointer_terms(head, hidden, seq))  # [B], [B], [B, L]
    if new:  # the window's items leave the explore softmax (unless the window holds every item)
        in_window = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, seq.clamp(min=0), seq >= 0)  # [B, N]
        logits = logits.masked_fill(in_window & ~in_window.all(-1, keepdim=True), float("-inf"))
    explore = logits.log_softmax(-1)
    mass = log_a.exp() * (seq >= 0)  # [B, L]
    copy = torch.zeros_like(logits).scatter_add_(1, seq.clamp(min=0), mass).clamp_min_(1e-30).log_()
    return torch.logaddexp(log_e[:, None] + explore, log_r[:, None] + copy)
