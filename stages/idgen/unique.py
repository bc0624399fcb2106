"""Unique IDs from beam lists: clashes are resolved by retrying only the clashing entities with
their next beam (IDGenRec's diverse ID generation, as a deterministic assignment).

Round after round, every unassigned entity proposes its next untried beam. A proposal equal to an
ID already assigned is rejected; among equal proposals the one with the higher beam score (then the
lower entity id) wins and the others move on to their next beam. An entity whose beams are all
taken falls back to its best beam with the last word replaced by the lowest word id that makes it
unique, or when none does the last two words, ... (`fallback`, counted). Each round is tensor code
over all entities.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gdr_cli.errors import GdrError


def _rows_equal_any(rows: Tensor, table: Tensor) -> Tensor:
    """Whether each row of `rows` [M, L] equals some row of `table` [K, L] -> [M] bool."""
    if table.numel() == 0 or rows.numel() == 0:
        return torch.zeros(rows.shape[0], dtype=torch.bool)
    both = torch.cat([table, rows])
    _, inv = torch.unique(both, dim=0, return_inverse=True)
    taken = torch.zeros(int(inv.max()) + 1, dtype=torch.bool)
    taken[inv[: table.shape[0]]] = True
    return taken[inv[table.shape[0] :]]


def assign_unique(beams: Tensor, scores: Tensor, *, first_word: int, n_words: int) -> tuple[Tensor, dict[str, int]]:
    """One unique ID per entity. beams [N, B, L] int64 (best first), scores [N, B] float32.

    Returns (ids [N, L] int64, stats): `retried` entities that did not keep their best beam,
    `fallback` entities given the last-word rule, `collisions_first` entities whose best beam was
    shared with another entity, `collisions_final` (0 by construction, checked).
    """
    n, b, _ = beams.shape
    ids = beams[:, 0].clone()
    done = torch.zeros(n, dtype=torch.bool)
    ptr = torch.zeros(n, dtype=torch.int64)
    _, inv, counts = torch.unique(beams[:, 0], dim=0, return_inverse=True, return_counts=True)
    first = int((counts[inv] > 1).sum())
    order = torch.arange(n)
    while True:
        todo = (~done & (ptr < b)).nonzero().flatten()
        if todo.numel() == 0:
            break
        prop = beams[todo, ptr[todo]]  # [M, L]
        clash = _rows_equal_any(prop, ids[done])
        ptr[todo[clash]] += 1
        todo, prop = todo[~clash], prop[~clash]
        if todo.numel() == 0:
            continue
        _, grp = torch.unique(prop, dim=0, return_inverse=True)  # [M] proposal group
        # winner of each group: highest score, then lowest entity id (lexicographic on (-score, id))
        key = torch.stack([-scores[todo, ptr[todo]].double(), order[todo].double()], 1)
        rank = torch.from_numpy(np.lexsort((key[:, 1].numpy(), key[:, 0].numpy(), grp.numpy())))
        first_of_group = torch.ones(todo.numel(), dtype=torch.bool)
        first_of_group[1:] = grp[rank[1:]] != grp[rank[:-1]]
        win = rank[first_of_group]
        lose = rank[~first_of_group]
        ids[todo[win]] = prop[win]
        done[todo[win]] = True
        ptr[todo[lose]] += 1
    left = (~done).nonzero().flatten()
    for e in left.tolist():  # rare: every beam of e was taken (not a hot path)
        ids[e] = _free_near(beams[e, 0], ids[done], first_word=first_word, n_words=n_words)
        done[e] = True
    _, counts = torch.unique(ids, dim=0, return_counts=True)
    stats = {
        "collisions_first": first,
        "retried": int((ptr > 0).sum()),
        "fallback": int(left.numel()),
        "collisions_final": int((counts - 1).sum()),
    }
    return ids, stats


def _free_near(best: Tensor, taken: Tensor, *, first_word: int, n_words: int) -> Tensor:
    """The first ID not in `taken` [K, L] that keeps the longest prefix of `best` [L]: its last word
    replaced (words in id order), else its last two words, ... -> [L] int64."""
    length = best.shape[0]
    base = n_words - first_word
    for j in range(1, length + 1):
        count = min(base**j, taken.shape[0] + 1)  # among K + 1 suffixes at least one is free
        idx = torch.arange(count)
        digits = torch.stack([(idx // base**p) % base for p in reversed(range(j))], 1) + first_word  # [count, j]
        cand = torch.cat([best[: length - j].expand(count, -1), digits], 1)
        free = ~_rows_equal_any(cand, taken)
        if free.any():
            return cand[free.nonzero()[0, 0]]
    raise GdrError("no unique ID left", fix="raise train_gen.id_len")
