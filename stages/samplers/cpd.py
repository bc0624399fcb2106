"""Confidence-guided parallel beam search (DIFF_GRM).

One model pass on the all-masked code, then at every step each beam is extended by the joint
best (beam × set of masked positions × digits) in log space, filling `digits_per_step` digits at
once: with 2 per step a candidate is a pair of positions and the pair of digits some real item
has there, scored log p(v1 at j1) + log p(v2 at j2) from the same pass. With one digit per
step the candidates are (beam, position, digit) triples whose digit some allowed item has with
the beam's digits (`CodeTable.digit_counts`: [beams, positions, V] whatever the catalogue size);
with more, they are enumerated per (beam, item) pair, one per distinct partial code
(`CodeTable.representatives`), users chunked so that the counted pairs stay below CHUNK. Either
way every beam stays a prefix of a real item; partial codes reached by different fill orders are merged
(keeping the max), and so are partial codes that complete to the same set of items. The history encoding is computed once per user and shared by all beams.

Model calls: a beam that only one item completes (with `renormalize`) or a dead beam reads no
log-probs, so the model is not run for it (`needless`).

Widths: `first_beam` beams after the first step, max(`beam`, k) after every later one (DIFF_GRM
decodes with 256 and 512). Scores: off `renormalize` (the default, as DIFF_GRM and the tiger beam) a
digit scores its raw model log-prob, so a finished code scores the model's own log-probability of it
(what the repeat head mixes with the history items); with it on each digit's prediction is
renormalised over the digits some allowed item still has (a partial code that only one item
completes then scores 0 for every remaining digit, which inflates such codes against the history
items). Raw scores: Last.fm 2K validation NDCG@10 +0.005 on average over 4 runs, MovieLens 100K level
(benchmarks/ablation_quality.md, round 9).

Excluded items (the user's history under `--exclude-history`) are invalid completions at every
step: candidates are enumerated from allowed items only (each partial code is represented by
its first allowed item), so a beam is kept only if some allowed item completes it.
"""

from __future__ import annotations

import bisect
import math

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.ids.trie import Trie
from stages.samplers.base import DiffusionSampler, SamplerOptions, State
from stages.samplers.exclusion import ItemSets, item_sets
from stages.samplers.free import free_extend
from stages.samplers.marginal_beam import marginal_beam
from stages.samplers.validity import CHUNK, CodeTable, bits, subsets

NEG = -1e9
WHOLE_CODE = ("exact", "beam")
"""How cpd searches the whole code in one step: score every item, or a trie beam over the digits' scores."""


def beam_extend(
    table: CodeTable, state: State, logp: Tensor, sets: Tensor, width: int, renormalize: bool = True
) -> State:
    """Extend every beam by one set of positions from `sets`, keep the best `width` distinct beams.

    logp: [B, S, n, V] model log-probs (with `renormalize`, renormalised here over the digits each
    beam can still take); sets: [P, n] bool candidate position sets (only those inside a beam's
    masked positions are used); state.extra["exclude"]: `ItemSets` (sparse [B, N]) items never to complete;
    state.extra["invalid"] (default: the same): the excluded items that are also out of the
    renormalisation (the user's history, not the items an earlier round found, so that the
    rounds' scores stay comparable). Users are processed in chunks so that their candidates (the
    beams' matching items × sets, counted first) stay below CHUNK: memory follows CHUNK, not the catalogue.
    """
    b, s, _ = state.tokens.shape
    if b == 0:  # no users: nothing to extend
        return State(tokens=state.tokens, score=state.score, step=state.step + 1, extra=state.extra)
    size = int(sets[0].sum())
    filled = int((state.tokens[0, 0] >= 0).sum()) + size
    c = min(width * math.comb(filled, size), s * table.n_items * sets.shape[0])  # enough for `width` distinct
    exclude = item_sets(state.extra, "exclude")  # items no beam may complete to (sparse [B, N])
    invalid = item_sets(state.extra, "invalid")
    invalid = exclude if invalid is None else invalid  # of those, the ones out of the validity structure
    parts = []
    for lo, hi in user_chunks(table, state.tokens, sets, size):  # chunks of users, each vectorised
        ex = None
        if exclude is not None:
            part = exclude.slice(lo, hi)
            ex = (part, part if invalid is exclude else invalid.slice(lo, hi))
        parts.append(
            _extend(table, state.tokens[lo:hi], state.score[lo:hi], logp[lo:hi], sets, c, width, ex, renormalize)
        )
    tokens, score = (torch.cat(t) for t in zip(*parts, strict=True))
    return State(tokens=tokens, score=score, step=state.step + 1, extra=state.extra)


def user_chunks(table: CodeTable, tokens: Tensor, sets: Tensor, size: int) -> list[tuple[int, int]]:
    """Consecutive user ranges [lo, hi) whose candidates stay below CHUNK (at least one user each).

    tokens: [B, S, n]. A user's candidates are its (beam, item) pairs × position sets, counted by
    binary search without building them; on the first step (every user at the same code) they are
    the distinct partial codes, at most sets × V^size whatever the catalogue size.
    """
    b, s, n = tokens.shape
    p = sets.shape[0]
    if s == 1 and bool((tokens == tokens[:1]).all()):
        step = max(1, CHUNK // (p * min(table.n_items, table.vmax**size)))
        return [(lo, min(lo + step, b)) for lo in range(0, b, step)]
    if size == 1 and table.radix is not None:  # (beam, position, digit) candidates: s·P·V per user
        step = max(1, CHUNK // (s * p * table.vmax))
        return [(lo, min(lo + step, b)) for lo in range(0, b, step)]
    per_user = table.pair_counts(tokens.reshape(b * s, n)).view(b, s).sum(dim=1) * p  # [B]
    ends = per_user.cumsum(0).tolist()
    out, lo, done = [], 0, 0
    while lo < b:
        hi = max(lo + 1, bisect.bisect_right(ends, done + CHUNK, lo))
        out.append((lo, hi))
        lo, done = hi, ends[hi - 1]
    return out


def _extend(
    table: CodeTable,
    tokens: Tensor,
    score: Tensor,
    logp: Tensor,
    sets: Tensor,
    c: int,
    width: int,
    excluded: tuple[ItemSets, ItemSets] | None,
    renormalize: bool,
) -> tuple[Tensor, Tensor]:
    """beam_extend on a chunk of users: tokens [b, s, n], score [b, s] -> ([b, w, n], [b, w]).
    excluded: (items never to complete, items out of the renormalisation) of the b users, or None.

    Candidates are scored only on the (beam, item) pairs still possible: after the first step a
    beam matches a handful of items, so the work is far below beams × catalogue.
    """
    _, s, n = tokens.shape
    if s == 1 and bool((tokens == tokens[:1]).all()):  # every user at the same code (the first step)
        return _extend_shared(table, tokens, score, logp, sets, c, width, excluded, renormalize)
    if int(sets[0].sum()) == 1 and table.radix is not None:  # one digit per step: (beam, position, digit)
        top, parent, item, which = _candidates_one_digit(table, tokens, score, logp, sets, c, excluded, renormalize)
    else:
        top, parent, item, which = _candidates_by_item(table, tokens, score, logp, sets, c, excluded, renormalize)
    # a candidate's item is the representative of its new partial code: (position set, item) names it
    filled = bits(tokens >= 0)  # [b, s]
    full = filled.gather(1, parent) | bits(sets)[which]  # [b, C] position set after the step
    # partial codes that complete to the same set of items are one candidate, whichever digits
    # are filled (a code only one item has is that item): the beam keeps `width` distinct ones
    key = table.group_key()[full, item]  # [b, C]
    ordered, order = key.sort(dim=1, stable=True)  # equal codes adjacent, the best (earliest) first
    dup = torch.zeros_like(top, dtype=torch.bool).scatter_(1, order[:, 1:], ordered[:, 1:] == ordered[:, :-1])
    best, keep = top.masked_fill(dup, float("-inf")).topk(min(width, top.shape[1]), dim=1)
    parent, item, which = parent.gather(1, keep), item.gather(1, keep), which.gather(1, keep)
    new = tokens.gather(1, parent[..., None].expand(-1, -1, n))
    return torch.where(sets[which], table.codes[item], new), best  # [b, w, n]


def _candidates_one_digit(
    table: CodeTable,
    tokens: Tensor,
    score: Tensor,
    logp: Tensor,
    sets: Tensor,
    c: int,
    excluded: tuple[ItemSets, ItemSets] | None,
    renormalize: bool,
) -> tuple[Tensor, ...]:
    """The c best one-digit extensions of each user's beams, enumerated as (beam, position, digit):
    [b, s·P·V] dense scores whatever the catalogue size. A digit is a candidate when some item not
    excluded for the user has it with the beam's digits (`CodeTable.digit_counts`), and is
    renormalised over the digits some item outside `invalid` has. -> (top [b, C], parent [b, C],
    representative item [b, C], set index [b, C])."""
    b, s, n = tokens.shape
    r, p, v = b * s, sets.shape[0], logp.shape[-1]
    tok, lp, base = tokens.reshape(r, n), logp.reshape(r, n, v), score.reshape(r)
    exclude, invalid = excluded if excluded is not None else (None, None)
    ex_pairs = _row_pairs(*exclude.pairs(), s) if exclude is not None else None
    inv_pairs = ex_pairs if invalid is exclude else _row_pairs(*invalid.pairs(), s) if invalid is not None else None
    few = table.allowed_if_few(tok) if ex_pairs is None else None  # [R, n, V] from the beams' items, when few
    if few is not None:  # every position at once: no exclusion, so the candidates are the renormalisation's digits
        js = sets.nonzero()[:, 1]  # [P] the position each set fills
        ok = few[:, js] & (tok[:, js] < 0)[..., None]  # [R, P, V] candidates (digits of masked positions)
        g = lp[:, js]
        if renormalize:  # (a row without candidates gives NaN here, never selected below)
            g = torch.log_softmax(g.masked_fill(~ok, float("-inf")), dim=-1)
        value = torch.where(ok, base[:, None, None] + g.clamp(min=NEG), float("-inf"))
        return _top_one_digit(table, tokens, value, sets, c)
    value = torch.full((r, p, v), float("-inf"), device=logp.device)
    for q, j in enumerate(sets.nonzero()[:, 1].tolist()):  # the position each set fills (P ≤ n)
        rows = (tok[:, j] < 0).nonzero().squeeze(1)  # beams where j is still masked
        if not len(rows):
            continue
        ok = table.digit_counts(tok[rows], j, _subset(ex_pairs, rows)) > 0  # [m, V] candidates
        g = lp[rows, j]
        if renormalize:
            norm = ok if inv_pairs is ex_pairs else table.digit_counts(tok[rows], j, _subset(inv_pairs, rows)) > 0
            g = torch.log_softmax(g.masked_fill(~norm, float("-inf")), dim=-1)
        value[rows, q] = torch.where(ok, base[rows, None] + g.clamp(min=NEG), float("-inf"))
    return _top_one_digit(table, tokens, value, sets, c)


def _top_one_digit(table: CodeTable, tokens: Tensor, value: Tensor, sets: Tensor, c: int) -> tuple[Tensor, ...]:
    """The c best of the (beam, position, digit) candidate scores value [b·s, P, V] of tokens [b, s, n]
    -> (top [b, C], parent [b, C], representative item [b, C], set index [b, C])."""
    b, s, n = tokens.shape
    p, v = value.shape[1:]
    top, idx = value.view(b, s * p * v).topk(min(c, s * p * v), dim=1)
    parent, which, digit = idx // (p * v), (idx // v) % p, idx % v
    new = tokens.gather(1, parent[..., None].expand(-1, -1, n)).clone()  # [b, C, n]
    at = sets[which]  # [b, C, n]
    new[at] = digit.reshape(-1)
    full = bits(new >= 0)  # [b, C] a representative: the first item with the new partial code
    key = (new.clamp(min=0) * table.radix).sum(dim=-1)
    lo = torch.zeros_like(key)
    for t in full.unique().tolist():
        here = full == t
        lo[here] = torch.searchsorted(table.part_keys[t], key[here]).clamp(max=table.n_items - 1)
    return top, parent, table.part_items[full, lo], which


def _row_pairs(user: Tensor, item: Tensor, s: int) -> tuple[Tensor, Tensor]:
    """(user [E], item [E]) excluded pairs -> (beam row [E·s], item [E·s]) for the s beams of each user."""
    row = (user * s)[:, None] + torch.arange(s, device=user.device)  # [E, s]
    return row.reshape(-1), item[:, None].expand(-1, s).reshape(-1)


def _subset(pairs: tuple[Tensor, Tensor] | None, rows: Tensor) -> tuple[Tensor, Tensor] | None:
    """(row, item) pairs restricted to `rows` [m] (sorted), renumbered as positions in `rows`."""
    if pairs is None:
        return None
    pos = torch.searchsorted(rows, pairs[0]).clamp(max=len(rows) - 1)
    hit = rows[pos] == pairs[0]
    return pos[hit], pairs[1][hit]


def _candidates_by_item(
    table: CodeTable,
    tokens: Tensor,
    score: Tensor,
    logp: Tensor,
    sets: Tensor,
    c: int,
    excluded: tuple[ItemSets, ItemSets] | None,
    renormalize: bool,
) -> tuple[Tensor, ...]:
    """The c best extensions of each user's beams, enumerated per (beam, item) pair still possible
    (after the first step a beam matches a handful of items, so the work is far below beams ×
    catalogue) and per position set -> (top [b, C], parent [b, C], item [b, C], set index [b, C])."""
    b, s, n = tokens.shape
    r, n_items, p = b * s, table.n_items, sets.shape[0]
    tok = tokens.reshape(r, n)
    exclude, invalid = excluded if excluded is not None else (None, None)
    row, item = table.pairs(tok)  # [M] possible (beam, item) pairs
    if invalid is not None:  # invalid items are no completion of any beam
        keep = ~invalid.contains(row // s, item)
        row, item = row[keep], item[keep]
    if renormalize:
        g = table.restricted_digits(logp.reshape(r, n, -1), row, item)  # [M, n]
    else:
        g = logp.reshape(r, n, -1)[row[:, None], torch.arange(n, device=logp.device), table.codes[item]]  # [M, n] raw
    if exclude is not None and exclude is not invalid:  # nor are the other excluded items
        keep = ~exclude.contains(row // s, item)
        row, item, g = row[keep], item[keep], g[keep]
    # only the (pair, set) entries whose set lies within the beam's masked positions: at the last step one set of P
    masked = tok < 0
    inside = ~(sets[None] & ~masked[:, None]).any(dim=-1)  # [R, P]
    m, q = inside[row].nonzero(as_tuple=True)  # [E] entries: pair index, set index
    cand = g.clamp_(min=NEG) @ sets.T.float()  # [M, P] log p of the set's digits
    value = score.reshape(r)[row[m]] + cand[m, q]  # [E]
    row, item = row[m], item[m]
    full = bits(~masked)[row] | bits(sets)[q]  # [E] position set after the extension
    if exclude is None:
        valid = table.representatives()[full, item]  # one per partial code
    else:
        valid = _first_allowed(table, row, item, full, exclude, row // s)
    slot = ((row % s) * n_items + item) * p + q  # [E]
    value, user, slot = value[valid], (row // s)[valid], slot[valid]
    if 8 * len(value) < b * s * n_items * p:  # few candidates (later steps): sort them
        top, idx = _top_per_user(value, user, slot, b, c)  # [b, C]
    else:  # dense: one table per user
        total = torch.full((b, s * n_items * p), float("-inf"), device=logp.device)
        total[user, slot] = value
        top, idx = total.topk(c, dim=1)
    return top, idx // (n_items * p), (idx // p) % n_items, idx % p


def _first_allowed(
    table: CodeTable, row: Tensor, item: Tensor, full: Tensor, exclude: ItemSets, user: Tensor
) -> Tensor:
    """Whether each entry's item is the first allowed item of its new partial code.

    row, item: [E] (beam, item) pairs of allowed items; full: [E] position set after each entry's extension;
    exclude: the excluded items of the b users; user: [E] the entry's user. The group's first item overall
    stands for it unless that item is excluded; then its first allowed member (among the row's entries at
    that position set, which hold every allowed member) does -> [E] bool. An entry whose item is its group's
    first item is allowed, so only the others are looked up (at the last step, none: a full code is one item).
    """
    n_items = table.n_items
    rep = table.rep_of()[full, item]  # [E]
    first = rep == item
    other = (~first).nonzero().squeeze(1)
    m = other[exclude.contains(user[other], rep[other])]  # entries whose group's first item is excluded
    if len(m):
        key = (row[m] * table.rep_of().shape[0] + full[m]) * n_items + rep[m]  # (row, position set, group)
        _, inverse = torch.unique(key, return_inverse=True)
        low = torch.full((int(inverse.max()) + 1,), n_items, device=item.device).scatter_reduce(
            0, inverse, item[m], "amin"
        )
        first[m] = item[m] == low[inverse]
    return first


def _dead_groups(table: CodeTable, exclude: ItemSets, full: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Partial codes every item of which a user excludes.

    exclude: the b users' excluded items; full: [P] position sets (bit masks) -> (user [D], set index [D], first
    item of the group [D]): the groups at full[set] whose members are all excluded for that user.
    """
    n_items, p = table.n_items, len(full)
    user, item = exclude.pairs()  # [E]
    rep = table.rep_of()[full[:, None], item[None]]  # [P, E]
    key = (user[None] * p + torch.arange(p, device=item.device)[:, None]) * n_items + rep
    uniq, count = torch.unique(key.reshape(-1), return_counts=True)
    which, first = (uniq // n_items) % p, uniq % n_items
    dead = count == table.group_size()[full[which], first]
    return (uniq // (n_items * p))[dead], which[dead], first[dead]


def _extend_shared(
    table: CodeTable,
    tokens: Tensor,
    score: Tensor,
    logp: Tensor,
    sets: Tensor,
    c: int,
    width: int,
    excluded: tuple[ItemSets, ItemSets] | None,
    renormalize: bool,
) -> tuple[Tensor, Tensor]:
    """_extend when each user has one beam and all hold the same code: the candidates (set, item
    representative) are the same for every user, so they are enumerated once and scored by one
    gather [b, K] (no per-user pairs). Distinct by construction: no duplicate check. A user's
    excluded items only remove the candidates (and, renormalising, the digits) that no allowed
    item has: found from the excluded items, not by checking every candidate."""
    b, _, n = tokens.shape
    exclude, invalid = excluded if excluded is not None else (None, None)
    tok = tokens[0, 0]  # [n]
    masked = tok < 0
    full = bits(~masked) | bits(sets)  # [P]
    which, item = _shared_candidates(table, tok, sets)  # [K] candidates: a position set and a representative item
    size = int(sets[0].sum())
    v = logp.shape[-1]
    lp = shared_scores(table, tok, logp.reshape(b, n, v), invalid, renormalize)  # [b, n, V]
    at, (sorted_key, order) = _shared_lookup(table, tok, sets, which, item, v)
    flat = lp.reshape(b, n * v)
    value = flat.index_select(1, at[0])  # [b, K], one position at a time: no [b, size·K] intermediate
    for q in range(1, size):
        value += flat.index_select(1, at[q])
    value += score.reshape(b, 1)
    if exclude is not None:  # candidates no allowed item completes
        user, q, rep = _dead_groups(table, exclude, full)
        dead_key = q * table.n_items + rep
        hit = torch.searchsorted(sorted_key, dead_key).clamp(max=len(sorted_key) - 1)
        found = sorted_key[hit] == dead_key
        value[user[found], order[hit[found]]] = float("-inf")
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


def shared_scores(table: CodeTable, tok: Tensor, logp: Tensor, invalid: ItemSets | None, renormalize: bool) -> Tensor:
    """The first step's digit scores when every user holds the code tok [n]: logp [b, n, V] -> [b, n, V], raw
    log-probs (clamped at NEG) or, with `renormalize`, renormalised over the digits some allowed item has
    at each position (with the filled ones): `invalid` (the b users' excluded items) takes digits out."""
    if not renormalize:
        return logp.clamp(min=NEG)
    masked = tok < 0
    ok = _shared_allowed(table, tok).expand(logp.shape[0], -1, -1)  # [b, n, V] shared by every user
    if invalid is not None:  # a digit no valid item has at j (with the filled ones) is out
        js = masked.nonzero().squeeze(1)  # [J]
        user, at_j, rep = _dead_groups(table, invalid, bits(~masked) | (1 << js))
        ok = ok.clone()
        ok[user, js[at_j], table.codes[rep, js[at_j]]] = False
    return torch.log_softmax(logp.masked_fill(~ok, float("-inf")), dim=-1).clamp(min=NEG)


def whole_code_beam(table: CodeTable, state: State, logp: Tensor, width: int, renormalize: bool) -> State:
    """The whole code in one step by a trie beam (`marginal_beam`) instead of scoring every item: the first
    step's scores (`shared_scores`) of each user's one row, searched digit by digit with `width` beams, the
    state's excluded items left out of the search -> a finished State [B, width, n] (dead rows: score -inf)."""
    exclude, invalid = item_sets(state.extra, "exclude"), item_sets(state.extra, "invalid")
    invalid = exclude if invalid is None else invalid
    lp = shared_scores(table, state.tokens[0, 0], logp[:, 0], invalid, renormalize)  # [B, n, V]
    if "trie" not in table.memo:
        table.memo["trie"] = Trie(table.codes, table.vocab_sizes)
    items, score = marginal_beam(lp, table.memo["trie"], width, None if exclude is None else exclude.lists())
    tokens = table.codes[items.clamp(min=0)]  # [B, width, n]; rows without an item are dead (-inf)
    return State(tokens=tokens, score=score, step=state.step + 1, extra=state.extra)


def _shared_candidates(table: CodeTable, tok: Tensor, sets: Tensor) -> tuple[Tensor, Tensor]:
    """The first step's candidates from the code tok [n]: (set index [K], representative item [K]), one per
    distinct partial code. The same for every batch: enumerated once per (table, code, sets) and kept
    in `table.memo`, so a batch does not pay for the catalogue."""
    key = ("shared", tuple(tok.tolist()), tuple(bits(sets).tolist()))
    if key not in table.memo:
        _, items = table.pairs(tok[None])  # [M0] items with the filled digits
        masked = tok < 0
        inside = ~(sets & ~masked).any(dim=-1)  # [P]
        full = bits(~masked) | bits(sets)  # [P]
        valid = inside[:, None] & table.representatives()[full[:, None], items[None]]  # [P, M0]
        which, at = valid.nonzero(as_tuple=True)
        table.memo[key] = (which, items[at])
    return table.memo[key]


def _shared_lookup(
    table: CodeTable, tok: Tensor, sets: Tensor, which: Tensor, item: Tensor, v: int
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The first step's per-candidate lookups, kept in `table.memo` (they depend on the code table only):
    at [size, K] each candidate's digit at each position it fills (flat index into [n·V]), and the candidates'
    sorted (set, item) keys with their order ([K], [K]) to find the ones a user's exclusions kill."""
    key = ("lookup", tuple(tok.tolist()), tuple(bits(sets).tolist()), v)
    if key not in table.memo:
        pos = sets.nonzero()[:, 1].view(len(sets), -1)[which]  # [K, size] positions each candidate fills
        at = (pos * v + table.codes[item].gather(1, pos)).T.contiguous()  # [size, K]
        table.memo[key] = (at, (which * table.n_items + item).sort())
    return table.memo[key]


def _shared_allowed(table: CodeTable, tok: Tensor) -> Tensor:
    """`table.allowed(tok[None])` [1, n, V] for the first step's shared code, kept in `table.memo`."""
    key = ("allowed", tuple(tok.tolist()))
    if key not in table.memo:
        table.memo[key] = table.allowed(tok[None])
    return table.memo[key]


def _top_per_user(value: Tensor, user: Tensor, slot: Tensor, b: int, c: int) -> tuple[Tensor, Tensor]:
    """The c best (value, slot) of each user from a flat candidate list -> ([b, c] values, -inf if
    fewer; [b, c] slots). Candidates come grouped by user (pairs are enumerated beam by beam), so each
    user's run is laid out as one row of a [b, longest run] table and read by one topk; when the runs are
    too uneven for that table, two stable sorts instead."""
    if len(user) > 1 and not bool((user[1:] >= user[:-1]).all()):
        order = user.argsort(stable=True)
        value, user, slot = value[order], user[order], slot[order]
    count = torch.bincount(user, minlength=b)  # [b]
    rank = torch.arange(len(user), device=value.device) - (count.cumsum(0) - count)[user]
    width = max(int(count.max()) if len(user) else 0, c)
    if b * width > 4 * len(user) + b * c:  # a few long runs: sort instead of a mostly empty table
        return _top_sorted(value, user, slot, b, c)
    table = torch.full((b, width), float("-inf"), device=value.device)
    table[user, rank] = value
    slots = torch.zeros(b, width, dtype=torch.long, device=value.device)
    slots[user, rank] = slot
    top, at = table.topk(c, dim=1)
    return top, slots.gather(1, at)


def _top_sorted(value: Tensor, user: Tensor, slot: Tensor, b: int, c: int) -> tuple[Tensor, Tensor]:
    """_top_per_user by two stable sorts (any candidate order, any run lengths)."""
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


def settled(table: CodeTable, state: State, renormalize: bool) -> Tensor | None:
    """[B, S] bool: beams whose extension scores do not depend on the model — dead beams (-inf), and,
    renormalising, beams only one item completes (every remaining digit then scores exactly 0)."""
    b, s, n = state.tokens.shape
    if s == 1 and bool((state.tokens == state.tokens[:1]).all()):  # the first step: one shared pass
        return None
    dead = torch.isinf(state.score)
    if not renormalize:
        return dead
    return dead | (table.pair_counts(state.tokens.reshape(b * s, n)).view(b, s) <= 1)


class CPDSampler(DiffusionSampler):
    name = "cpd"

    def __init__(self, table: CodeTable, schedule: Schedule, options: SamplerOptions, k: int):
        super().__init__(table, schedule, options)
        n, d = table.n_digits, options.digits_per_step
        if not 1 <= d <= n:
            raise GdrError(
                f"digits per step {d} is outside 1..{n} (the code length)", fix=f"use --digits-per-step 1..{n}"
            )
        if options.whole_code not in WHOLE_CODE:
            raise GdrError(
                f"unknown whole-code search {options.whole_code!r}", fix=f"use one of: {', '.join(WHOLE_CODE)}"
            )
        if options.whole_code == "beam" and (d != n or not options.constrained or bool((self.prefix >= 0).any())):
            raise GdrError(
                f"--whole-code beam searches the whole code of {n} digits in one step over the item trie "
                f"(asked: {d} digit(s) per step{'' if options.constrained else ', no constraint'}"
                f"{', a prefix' if bool((self.prefix >= 0).any()) else ''})",
                fix=f"use --digits-per-step {n} with the constraint and no --prefix, or drop --whole-code",
            )
        self.d, self.width = d, max(options.beam, k)
        self.first_width = self.width if options.first_beam is None else options.first_beam
        self.total = math.ceil(int((self.prefix < 0).sum()) / d)

    def done(self, state: State) -> bool:
        return state.step >= self.total

    def one_pass(self) -> bool:
        return self.total == 1  # the whole code in one step: every item scored from the all-masked pass

    def needless(self, state: State) -> Tensor | None:
        return settled(self.table, state, self.opts.renormalize) if self.opts.constrained else None

    def step(self, state: State, logp: Tensor) -> State:
        n = state.tokens.shape[2]
        size = min(self.d, int((self.prefix < 0).sum()) - self.d * state.step)  # digits still masked
        width = self.first_width if state.step == 0 else self.width
        if self.opts.whole_code == "beam":  # the whole code in this one step, by a trie beam
            return whole_code_beam(self.table, state, logp, width, self.opts.renormalize)
        if not self.opts.constrained:
            return free_extend(self.table, state, logp, subsets(n, size, logp.device), width)
        return beam_extend(self.table, state, logp, subsets(n, size, logp.device), width, self.opts.renormalize)
