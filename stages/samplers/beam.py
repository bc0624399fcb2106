"""Trie-constrained beam search over item codes, batched over users, with key/value caching.

For a code of D digits the search takes D steps; every step is tensor code over all users and
beams at once:

    encoder: run once per user; cross keys/values once per user -> states [B, S, d]
    step d:  decoder on the newest token of each beam (cached)  -> log-probs [B, W', V]
             keep digit d's token block, -inf where the trie has no edge (or the subtree is excluded)
             candidates = beam score + token log-prob           -> [B, W' * V_d]
             top-W candidates become the new beams; the self-attention cache is reordered by parent
    end:     leaves -> items; the beams are distinct codes, hence distinct items

Scores are total log-probabilities of the code (no length normalisation: every code has length D).
All beams start from the same start token, so step 0 runs one row per user and the self-attention
cache is widened afterwards. Cross-attention keys/values depend only on the user: they are computed
once (on B rows, not B*W) and each user's W beams attend to that one copy as W queries, so neither
the encoder states nor their keys/values are ever copied per beam (`Tiger.next_logprobs`).

Why exactly k distinct items come out whenever the catalogue allows it (beam >= k): every kept
prefix has at least one live child, so the number of live beams never drops; it is min(W, live
prefixes at that depth) at every step, and min(W, live items) at the end.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from stages.ids.trie import Trie
from stages.models.repeat_head import CopyPrior
from stages.models.tiger import PAD

NEG_INF = float("-inf")
INVALID = -2
"""Item id of a generated code that names no item (unconstrained decoding); written as a null item."""


@torch.no_grad()
def beam_search(
    model: Any,
    history: Tensor,
    *,
    k: int,
    beam: int,
    trie: Trie,
    exclude: Tensor | None = None,
    use_cache: bool = True,
    constrained: bool = True,
    encoded: tuple[Tensor, Tensor] | None = None,
    copy: CopyPrior | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k items per user by constrained beam search of width `beam`.

    model: a code decoder with `encode`, `start_decoding`, `next_logprobs`, `decode_step` and `offsets`
    (see `Tiger`). history: [B, L] int64 item ids (-1 = padding). exclude: [B, L'] item ids never to return
    (e.g. the history), -1 = padding. use_cache=False runs the transformers decoder on the whole prefix
    each step (same result, slower; kept to check the cached decoder). constrained=False searches every code,
    not only the trie's (to measure what the constraint buys): a code that names no item comes back as INVALID.
    encoded: the model's `encode(history)` when the caller has it already (the encoder runs once per user).
    copy: a repeat expert (`stages.models.repeat_head`): beams are then ranked by the mixture of the code's
    log-prob and the attention mass of the history items the prefix matches, and scores are mixture log-probs.
    Returns (items [B, k] int64, -1 where the catalogue has fewer items, INVALID (-2) for a code of no item;
    scores [B, k] float32).
    """
    if beam < k:
        raise GdrError(
            f"beam width {beam} is smaller than k={k}", fix=f"use a beam of at least {k} (e.g. --beam {max(20, k)})"
        )
    b, dev = history.shape[0], history.device
    offsets = model.offsets.tolist()
    blocked = trie.blocked(exclude) if exclude is not None else None
    hidden, mask = model.encode(history) if encoded is None else encoded  # [B, S, d], [B, S]
    cache = model.start_decoding(hidden, mask) if use_cache else None
    user = torch.arange(b, device=dev)
    width = 1  # beams per user so far
    scores = torch.zeros(b, 1, device=dev)  # [B, W'] total log-prob of each beam (the mixture's, with `copy`)
    gen = scores  # [B, W'] the code's own log-prob (differs from `scores` only with `copy`)
    match = copy.start() if copy is not None else None  # [B, W', L] history items each beam's prefix matches
    nodes = torch.zeros(b, 1, dtype=torch.int64, device=dev)  # [B, W'] trie node of each beam
    tokens = torch.full((b, 1, 1), PAD, dtype=torch.int64, device=dev)  # [B, W', t] decoder inputs
    evals = 0  # decoder rows run (model calls), summed over users
    for d, v in enumerate(trie.vocab_sizes):
        evals += b * width
        if cache is not None:
            step = model.next_logprobs(tokens[:, :, -1], cache, (offsets[d], offsets[d] + v)).flatten(
                0, 1
            )  # [B*W', V_d]
        else:
            rows = user.repeat_interleave(width)  # [B*W'] user of each decoder row
            step = model.decode_step(tokens.flatten(0, 1), hidden[rows], mask[rows])[:, offsets[d] : offsets[d] + v]
        flat = nodes.flatten()
        child = None  # [B*W', V_d] child of every candidate, -1 = no such code (only built when needed)
        if constrained and blocked is None:  # the trie's bool table: the children of the kept beams only
            dead = trie.no_child(d, flat)  # [B*W', V_d] candidates that are no prefix of an item
        else:
            child = trie.children(d, flat.clamp(min=0))
            if not constrained:  # beams off the trie (node -1) have no children
                child = torch.where(flat[:, None] >= 0, child, -1)
            dead = child < 0 if constrained else None  # candidates that are no prefix of an (allowed) item
            if blocked is not None:
                rows = user.repeat_interleave(width)[:, None]
                off = trie.is_blocked(blocked[d + 1], d + 1, rows, child.clamp(min=0)) & (child >= 0)
                dead = off if dead is None else dead | off
        cand = step + gen.flatten()[:, None]  # [B*W', V_d], a new tensor: masked in place
        if copy is not None:
            gen3 = cand.view(b, width, v)
            if copy.explore_new and d == trie.depth - 1:  # history items: the repeat expert's mass alone
                gen3 = gen3.masked_fill(copy.history_leaves(d, match, v), NEG_INF)
            gen_cand = gen3.reshape(b, width * v)
            cand = copy.mix(gen3, copy.candidates(d, match, v)).view(b * width, v)
        if dead is not None:
            cand.masked_fill_(dead, NEG_INF)
        scores, idx = cand.view(b, width * v).topk(min(beam, width * v), dim=1)  # [B, W]
        parent = idx // v  # [B, W] beam each candidate extends
        if copy is None:
            gen = scores
        else:
            gen, match = gen_cand.gather(1, idx), copy.advance(d, match, parent, idx % v)
        if child is None:  # [B, W], -1 = off the trie (unconstrained) or a dead beam
            nodes = trie.child(d, nodes.gather(1, parent), idx % v)
        else:
            nodes = child.view(b, width * v).gather(1, idx)
        if constrained:
            nodes = nodes.clamp(min=0)  # dead -inf beams: any node
        if d == trie.depth - 1:
            break  # the leaves are found; nothing more to decode
        tokens = torch.cat([tokens[user[:, None], parent], (idx % v + offsets[d])[..., None]], 2)  # [B, W, t+1]
        if cache is not None:
            cache.reorder(parent)
        width = scores.shape[1]
    width = scores.shape[1]
    model.sample_stats = {"nfe": evals / max(b, 1), "function_evals": evals, "rounds": 1}
    items = torch.where(nodes >= 0, trie.items(nodes), INVALID)  # [B, W] sorted by score
    items = torch.where(torch.isfinite(scores), items, -1)
    if width < k:
        items = torch.cat([items, items.new_full((b, k - width), -1)], 1)
        scores = torch.cat([scores, scores.new_full((b, k - width), NEG_INF)], 1)
    return items[:, :k], scores[:, :k].float()
