"""Confidence-guided parallel beam search (DIFF_GRM).

One model pass on the all-masked code, then at every step each beam is extended by the joint
best (beam × set of masked positions × digits) in log space, filling `digits_per_step` digits at
once: with 2 per step a candidate is a pair of positions and the pair of digits some real item
has there, scored log p(v1 at j1) + log p(v2 at j2) from the same pass. Candidates are
enumerated per item, one per distinct partial code (`CodeTable.representatives`), so every
beam stays a prefix of a real item; partial codes reached by different fill orders are merged
(keeping the max). The history encoding is computed once per user and shared by all beams.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.samplers.base import DiffusionSampler, SamplerOptions, State
from stages.samplers.validity import CHUNK, CodeTable, bits, subsets

NEG = -1e9


def beam_extend(table: CodeTable, state: State, logp: Tensor, sets: Tensor, width: int) -> State:
    """Extend every beam by one set of positions from `sets`, keep the best `width` distinct beams.

    logp: [B, S, n, V] model log-probs (renormalised here over the digits each beam can still take);
    sets: [P, n] bool candidate position sets (only those inside a beam's masked positions are
    used). Users are processed in chunks so that beams · items · sets stays bounded.
    """
    b, s, n = state.tokens.shape
    size = int(sets[0].sum())
    filled = int((state.tokens[0, 0] >= 0).sum()) + size
    c = min(width * math.comb(filled, size), s * table.n_items * sets.shape[0])  # enough for `width` distinct
    exclude = state.extra.get("exclude") if filled == n else None  # completing the code: skip excluded items
    step = max(1, CHUNK // (s * table.n_items * sets.shape[0]))
    parts = []
    for lo in range(0, b, step):  # chunks of users, each vectorised
        hi = min(lo + step, b)
        ex = None if exclude is None else exclude[lo:hi]
        parts.append(_extend(table, state.tokens[lo:hi], state.score[lo:hi], logp[lo:hi], sets, c, width, ex))
    tokens, score = (torch.cat(t) for t in zip(*parts, strict=True))
    return State(tokens=tokens, score=score, step=state.step + 1, extra=state.extra)


def _extend(table: CodeTable, tokens: Tensor, score: Tensor, logp: Tensor, sets: Tensor, c: int, width: int,
            exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """beam_extend on a chunk of users: tokens [b, s, n], score [b, s] -> ([b, w, n], [b, w]).

    Candidates are scored only on the (beam, item) pairs still possible: after the first step a
    beam matches a handful of items, so the work is far below beams × catalogue.
    """
    b, s, n = tokens.shape
    r, n_items, p = b * s, table.n_items, sets.shape[0]
    tok = tokens.reshape(r, n)
    row, item = table.pairs(tok)  # [M] possible (beam, item) pairs
    lp = table.restrict(logp.reshape(r, n, -1), tok, (row, item))  # [R, n, V]
    if exclude is not None:
        keep = ~exclude[row // s, item]
        row, item = row[keep], item[keep]
    g = lp[row[:, None], torch.arange(n, device=lp.device), table.codes[item]].clamp(min=NEG)  # [M, n]
    cand = g @ sets.T.float()  # [M, P] log p of the set's digits
    masked = tok < 0
    inside = ~(sets[None] & ~masked[:, None]).any(dim=-1)  # [R, P] set within the masked positions
    full = bits(~masked)[:, None] | bits(sets)[None]  # [R, P] position set after the extension
    valid = inside[row] & table.representatives()[full[row], item[:, None]]  # [M, P] one per partial code
    slot = ((row % s) * n_items + item)[:, None] * p + torch.arange(p, device=lp.device)  # [M, P]
    user = (row // s)[:, None].expand(-1, p)
    value, user, slot = (score.reshape(r)[row][:, None] + cand)[valid], user[valid], slot[valid]
    if 8 * len(value) < b * s * n_items * p:  # few candidates (later steps): sort them
        top, idx = _top_per_user(value, user, slot, b, c)  # [b, C]
    else:  # dense (first step): one table per user
        total = torch.full((b, s * n_items * p), float("-inf"), device=lp.device)
        total[user, slot] = value
        top, idx = total.topk(c, dim=1)
    parent, item, which = idx // (n_items * p), (idx // p) % n_items, idx % p
    new = tokens.gather(1, parent[..., None].expand(b, c, n))
    new = torch.where(sets[which], table.codes[item], new)  # [b, C, n]
    same = (new[:, :, None, :] == new[:, None, :, :]).all(dim=-1)  # [b, C, C]
    earlier = torch.ones(c, c, dtype=torch.bool, device=new.device).tril(-1)
    top = top.masked_fill((same & earlier).any(dim=2), float("-inf"))
    best, keep = top.topk(min(width, c), dim=1)
    return new.gather(1, keep[..., None].expand(-1, -1, n)), best


def _top_per_user(value: Tensor, user: Tensor, slot: Tensor, b: int, c: int) -> tuple[Tensor, Tensor]:
    """The c best (value, slot) of each user from a flat candidate list -> ([b, c] values, -inf if
    fewer; [b, c] slots). Two stable sorts instead of a dense [b, beams × items × sets] table."""
    order = value.argsort(descending=True, stable=True)
    order = order[user[order].argsort(stable=True)]  # grouped by user, best first within a user
    u = user[order]
    first = torch.searchsorted(u, torch.arange(b, device=u.device))  # [b] start of each user's run
    rank = torch.arange(len(u), device=u.device) - first[u]
    keep = order[rank < c]
    top = torch.full((b, c), float("-inf"), device=value.device)
    idx = torch.zeros(b, c, dtype=torch.long, device=value.device)
    top[user[keep], rank[rank < c]] = value[keep]
    idx[user[keep], rank[rank < c]] = slot[keep]
    return top, idx


class CPDSampler(DiffusionSampler):
    name = "cpd"

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions, k: int):
        super().__init__(table, schedule, options)
        n, d = table.n_digits, options.digits_per_step
        if not 1 <= d <= n:
            raise GdrError(f"digits per step {d} is outside 1..{n} (the code length)", fix=f"use --digits-per-step 1..{n}")
        self.d, self.width = d, max(options.beam, k)
        self.total = math.ceil(int((self.prefix < 0).sum()) / d)

    def done(self, state: State) -> bool:
        return state.step >= self.total

    def step(self, state: State, logp: Tensor) -> State:
        n = state.tokens.shape[2]
        size = min(self.d, int((state.tokens[0, 0] < 0).sum()))
        return beam_extend(self.table, state, logp, subsets(n, size, logp.device), self.width)
