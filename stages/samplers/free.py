"""Unconstrained decoding for the diffusion samplers (`gdr sample --no-constraint`).

The constrained samplers only ever hold partial codes some real item completes. Without the
constraint every digit a position's codebook has is a candidate, so a finished code may name no
item: such codes come back as `INVALID` (-2) and `sample` writes them as null items, which
`evaluate` counts in `invalid_rate` — what the constraint buys, measured.

`free_extend` is the beam step (cpd, ordered-beam) over all digit combinations: for each beam and
each set of positions to fill, the best `width` digit combinations (exact: the top `width` of a
sum of independent per-position scores only combine per-position top-`width` digits), merged
across beams and fill orders by code (keeping the max), the best `width` kept per user.
`free_finish` ranks finished codes per user by score, one entry per distinct code.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stages.samplers.base import State, top_distinct
from stages.samplers.exclusion import item_sets
from stages.samplers.validity import CodeTable

INVALID = -2
"""Item id of a finished code that names no item (as tiger's unconstrained beam search)."""


def digit_mask(table: CodeTable, device: torch.device) -> Tensor:
    """[n, V] bool: the digits each position's codebook has (V = the largest codebook)."""
    sizes = torch.tensor(table.vocab_sizes, device=device)
    return torch.arange(table.vmax, device=device)[None] < sizes[:, None]


def _top_combinations(lp: Tensor, pos: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """Best `width` digit tuples at positions `pos` [size] of each row. lp: [R, n, V] -> (scores [R, w],
    digits [R, w, size]) — combined one position at a time, keeping the top `width` (exact)."""
    score = lp.new_zeros(lp.shape[0], 1)
    digits = torch.zeros(lp.shape[0], 1, 0, dtype=torch.long, device=lp.device)
    for j in pos.tolist():
        top, idx = lp[:, j].topk(min(width, lp.shape[-1]), dim=-1)  # [R, w']
        total = (score[:, :, None] + top[:, None, :]).flatten(1)  # [R, c * w']
        keep = total.topk(min(width, total.shape[1]), dim=1)
        parent, child = keep.indices // top.shape[1], keep.indices % top.shape[1]
        digits = torch.cat([digits.gather(1, parent[..., None].expand(-1, -1, digits.shape[2])),
                            idx.gather(1, child)[..., None]], dim=2)  # fmt: skip
        score = keep.values
    return score, digits


def _code_groups(rows: Tensor) -> Tensor:
    """Group id of each row of rows [R, m] int64 (equal rows, equal id) -> [R] int64."""
    return torch.unique(rows, dim=0, return_inverse=True)[1]


def free_extend(table: CodeTable, state: State, logp: Tensor, sets: Tensor, width: int) -> State:
    """Extend every beam by one position set of `sets` [P, n] with any digits; keep the best `width`
    distinct partial codes per user. logp: [B, S, n, V] raw model log-probs (-inf off the codebooks)."""
    b, s, n = state.tokens.shape
    lp = logp.masked_fill(~digit_mask(table, logp.device), float("-inf")).reshape(b * s, n, -1)
    tokens, score = state.tokens.reshape(b * s, n), state.score.reshape(b * s)
    cand_tok, cand_score = [], []
    for p in range(sets.shape[0]):  # position sets (at most C(n, size) ≤ 70), each vectorised over beams
        pos = sets[p].nonzero().squeeze(1)
        inside = (tokens[:, pos] < 0).all(dim=1)  # [R] the set is still masked in this beam
        top, digits = _top_combinations(lp, pos, width)  # [R, w], [R, w, size]
        new = tokens[:, None, :].repeat(1, top.shape[1], 1)  # [R, w, n]
        new[:, :, pos] = digits
        cand_tok.append(new)
        cand_score.append((score[:, None] + top).masked_fill(~inside[:, None], float("-inf")))
    cand = torch.cat(cand_tok, 1).view(b, -1, n)  # [B, C, n]
    value = torch.cat(cand_score, 1).view(b, -1)  # [B, C]
    c = value.shape[1]
    user = torch.arange(b, device=value.device)[:, None].expand(b, c)
    group = _code_groups(torch.cat([user.reshape(-1, 1), cand.reshape(-1, n)], 1)).view(b, c)
    best = torch.full((int(group.max()) + 1 if group.numel() else 0,), float("-inf"), device=value.device)
    best = best.scatter_reduce(0, group.reshape(-1), value.reshape(-1), reduce="amax")
    # one candidate per distinct code: the first (lowest index) among those holding the group's max
    is_max = value == best[group]
    first = torch.full_like(best, c, dtype=torch.long).scatter_reduce(
        0,
        group.reshape(-1),
        torch.where(is_max, torch.arange(c, device=value.device).expand(b, c), c).reshape(-1),
        reduce="amin",
    )
    keep = torch.arange(c, device=value.device)[None] == first[group]
    value = value.masked_fill(~keep, float("-inf"))
    top, idx = value.topk(min(width, c), dim=1)  # [B, w]
    new = cand.gather(1, idx[..., None].expand(-1, -1, n))
    return State(tokens=new, score=top, step=state.step + 1, extra=state.extra)


def free_finish(table: CodeTable, state: State, k: int) -> tuple[Tensor, Tensor]:
    """Top-k distinct finished codes per user -> (items [B, k]: item id, INVALID (-2) for a code of no
    item, -1 = none; scores [B, k]). Excluded items (state.extra["exclude"], ItemSets) are left out."""
    b, s, n = state.tokens.shape
    flat = state.tokens.reshape(-1, n)
    items = table.item_of(flat).view(b, s)
    # distinct codes get distinct ids: items keep theirs, codes of no item get n_items + their group
    ident = torch.where(items >= 0, items, table.n_items + _code_groups(flat).view(b, s))
    score = state.score.float().masked_fill((flat < 0).any(dim=1).view(b, s), float("-inf"))
    ex = item_sets(state.extra, "exclude")
    if ex is not None:
        user = torch.arange(b, device=items.device)[:, None].expand_as(items)
        score = score.masked_fill(ex.contains(user, items), float("-inf"))
    ident, top = top_distinct(ident, score, k)
    return torch.where(ident >= table.n_items, INVALID, ident), top
