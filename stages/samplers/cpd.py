"""Confidence-guided parallel beam search (DIFF_GRM).

One model pass on the all-masked code, then at every step each beam is extended by the joint
best (beam × set of masked positions × digits) in log space, filling `digits_per_step` digits at
once: with 2 per step a candidate is a pair of positions and the pair of digits some real item
has there, scored log p(v1 at j1) + log p(v2 at j2) from the same pass. Candidates are
enumerated per item, one per distinct partial code (`CodeTable.representatives`), so every
beam stays a prefix of a real item; partial codes reached by different fill orders are merged
(keeping the max), and so are partial codes that complete to the same set of items. The history encoding is computed once per user and shared by all beams.
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
    used). Users are processed in chunks so that the candidates (at most beams · items · sets) stay
    below CHUNK.
    """
    b, s, n = state.tokens.shape
    if b == 0:  # no users: nothing to extend
        return State(tokens=state.tokens, score=state.score, step=state.step + 1, extra=state.extra)
    size = int(sets[0].sum())
    filled = int((state.tokens[0, 0] >= 0).sum()) + size
    c = min(width * math.comb(filled, size), s * table.n_items * sets.shape[0])  # enough for `width` distinct
    exclude = state.extra.get("exclude") if filled == n else None  # completing the code: skip excluded items
    step = max(1, CHUNK // (s * table.n_items * sets.shape[0]))
    if s > 1 and step < b:  # later steps: beams match a few items each, the candidates are sparse
        pairs = len(table.pairs(state.tokens.reshape(b * s, n))[0])
        if 8 * pairs < b * s * table.n_items and pairs * sets.shape[0] <= CHUNK:
            step = b  # all users at once (the candidates stay below CHUNK)
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
    if s == 1 and bool((tokens == tokens[:1]).all()):  # every user at the same code (the first step)
        return _extend_shared(table, tokens, score, logp, sets, c, width, exclude)
    r, n_items, p = b * s, table.n_items, sets.shape[0]
    tok = tokens.reshape(r, n)
    row, item = table.pairs(tok)  # [M] possible (beam, item) pairs
    g = table.restricted_digits(logp.reshape(r, n, -1), row, item).clamp(min=NEG)  # [M, n]
    if exclude is not None:
        keep = ~exclude[row // s, item]
        row, item, g = row[keep], item[keep], g[keep]
    cand = g @ sets.T.float()  # [M, P] log p of the set's digits
    masked = tok < 0
    inside = ~(sets[None] & ~masked[:, None]).any(dim=-1)  # [R, P] set within the masked positions
    filled = bits(~masked)  # [R]
    full = filled[:, None] | bits(sets)[None]  # [R, P] position set after the extension
    valid = inside[row] & table.representatives()[full[row], item[:, None]]  # [M, P] one per partial code
    slot = ((row % s) * n_items + item)[:, None] * p + torch.arange(p, device=logp.device)  # [M, P]
    user = (row // s)[:, None].expand(-1, p)
    value, user, slot = (score.reshape(r)[row][:, None] + cand)[valid], user[valid], slot[valid]
    if 8 * len(value) < b * s * n_items * p:  # few candidates (later steps): sort them
        top, idx = _top_per_user(value, user, slot, b, c)  # [b, C]
    else:  # dense: one table per user
        total = torch.full((b, s * n_items * p), float("-inf"), device=logp.device)
        total[user, slot] = value
        top, idx = total.topk(c, dim=1)
    parent, item, which = idx // (n_items * p), (idx // p) % n_items, idx % p
    # a candidate's item is the representative of its new partial code: (position set, item) names it
    full = filled.view(b, s).gather(1, parent) | bits(sets)[which]  # [b, C] position set after the step
    # partial codes that complete to the same set of items are one candidate, whichever digits
    # are filled (a code only one item has is that item): the beam keeps `width` distinct ones
    key = table.group_key()[full, item]  # [b, C]
    ordered, order = key.sort(dim=1, stable=True)  # equal codes adjacent, the best (earliest) first
    dup = torch.zeros_like(top, dtype=torch.bool).scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
    best, keep = top.masked_fill(dup, float("-inf")).topk(min(width, c), dim=1)
    parent, item, which = parent.gather(1, keep), item.gather(1, keep), which.gather(1, keep)
    new = tokens.gather(1, parent[..., None].expand(-1, -1, n))
    return torch.where(sets[which], table.codes[item], new), best  # [b, w, n]


def _extend_shared(table: CodeTable, tokens: Tensor, score: Tensor, logp: Tensor, sets: Tensor, c: int, width: int,
                   exclude: Tensor | None) -> tuple[Tensor, Tensor]:
    """_extend when each user has one beam and all hold the same code: the candidates (set, item
    representative) are the same for every user, so they are enumerated once and scored by one
    gather [b, K] (no per-user pairs). Distinct by construction: no duplicate check."""
    b, _, n = tokens.shape
    tok = tokens[0, 0]  # [n]
    _, items = table.pairs(tok[None])  # [M0] items with the filled digits
    masked = tok < 0
    inside = ~(sets & ~masked).any(dim=-1)  # [P]
    full = bits(~masked) | bits(sets)  # [P]
    valid = inside[:, None] & table.representatives()[full][:, items]  # [P, M0]
    which, at = valid.nonzero(as_tuple=True)  # [K] candidates: a position set and a representative item
    item = items[at]
    size = int(sets[0].sum())
    pos = sets.nonzero()[:, 1].view(-1, size)[which]  # [K, size] positions each candidate fills
    v = logp.shape[-1]
    ok = table.allowed(tok[None])  # [1, n, V] shared by every user
    lp = torch.log_softmax(logp.reshape(b, n, v).masked_fill(~ok, float("-inf")), dim=-1).clamp(min=NEG)  # [b, n, V]
    at = (pos * v + table.codes[item].gather(1, pos)).T.reshape(-1)  # [size*K] position-major
    value = lp.reshape(b, n * v).index_select(1, at).view(b, size, -1).sum(dim=1) + score.reshape(b, 1)  # [b, K]
    if exclude is not None:  # completing the code: skip excluded items
        value = value.masked_fill(exclude[:, item], float("-inf"))
    kk = min(c, len(item))
    top, idx = value.topk(kk, dim=1)  # [b, kk]
    best, keep = top.topk(min(width, c, kk), dim=1)
    idx = idx.gather(1, keep)
    new = torch.where(sets[which[idx]], table.codes[item[idx]], tok)  # [b, w, n]
    w = min(width, c)
    if new.shape[1] < w:  # fewer candidates than beams: dead (-inf) copies of the best keep the shape
        new = torch.cat([new, new[:, :1].expand(b, w - new.shape[1], n)], dim=1)
        best = torch.cat([best, best.new_full((b, w - best.shape[1]), float("-inf"))], dim=1)
    return new, best


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
        size = min(self.d, int((self.prefix < 0).sum()) - self.d * state.step)  # digits still masked
        return beam_extend(self.table, state, logp, subsets(n, size, logp.device), self.width)
