"""Catalogue-size-free validity: the sorted-key digit counts give the same digits, and the same
lists, as the dense [rows, N_items] item-match masks they replaced."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch

from stages.models.diffusion import DiffusionRecommender
from stages.samplers.base import DiffusionSampler, State
from stages.samplers.validity import CodeTable


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_table(seed: int, vocab: list[int], n_items: int) -> torch.Tensor:
    """n_items distinct random codes over the codebooks `vocab` -> [N, n] int64."""
    every = torch.tensor(list(itertools.product(*(range(v) for v in vocab))))
    pick = torch.randperm(len(every), generator=torch.Generator().manual_seed(seed))[:n_items]
    return every[pick]


def dense_allowed(
    table: CodeTable, tokens: torch.Tensor, rows: torch.Tensor, j: int, exclude: torch.Tensor | None, s: int
) -> torch.Tensor:
    """The replaced implementation: an item-match mask [R, N], minus the user's excluded items, scattered at j."""
    match = table.match(tokens)
    if exclude is not None:
        match &= ~exclude.repeat_interleave(s, dim=0)
    return table.allowed_at(match[rows], j)


def dense_allowed_digits(
    self: DiffusionSampler, state: State, tokens: torch.Tensor, rows: torch.Tensor, j: int
) -> torch.Tensor:
    exclude = state.extra.get("exclude")
    exclude = exclude.dense() if exclude is not None else None
    s = tokens.shape[0] // max(1, exclude.shape[0]) if exclude is not None else 1
    return dense_allowed(self.table, tokens, rows, j, exclude, s)


@pytest.mark.parametrize("seed,vocab,n_items", [(0, [5, 4, 3], 40), (1, [7, 7, 2, 3], 150), (2, [3, 3, 3, 3], 81)])
def test_digit_counts_equal_the_dense_item_match(seed: int, vocab: list[int], n_items: int) -> None:
    codes = random_table(seed, vocab, n_items)
    table = CodeTable(codes, vocab)
    gen = torch.Generator().manual_seed(seed)
    users, s, n = 6, 5, len(vocab)
    # rows: prefixes of real codes with random digits masked, plus a few codes no item has
    tokens = codes[torch.randint(0, n_items, (users * s,), generator=gen)].clone()
    tokens[torch.rand(users * s, n, generator=gen) < 0.5] = -1
    tokens[:3] = torch.tensor([v - 1 for v in vocab])  # (maybe) no item
    tokens[3] = -1  # all masked
    exclude = torch.rand(users, n_items, generator=gen) < 0.3
    exclude[0] = True  # a user with every item excluded: nothing allowed
    rows = torch.randperm(users * s, generator=gen)[: users * s - 4]
    for j in range(n):
        free = tokens.clone()
        free[:, j] = -1  # samplers ask for the digits of masked positions
        for ex in (None, exclude):
            dense = dense_allowed(table, free, rows, j, ex, s)
            pairs = None
            if ex is not None:
                u, item = ex.nonzero(as_tuple=True)
                q, e = (rows // s == u[:, None]).T.nonzero(as_tuple=True)  # every (query, excluded item of its user)
                pairs = (q, item[e])
            counts = table.digit_counts(tokens[rows], j, pairs)
            assert torch.equal(counts > 0, dense)
            # counts are the number of allowed items with that digit, by brute force on a few rows
            for q in range(0, len(rows), 7):
                other = tokens[rows[q]].clone()
                other[j] = -1
                fits = ((other < 0) | (codes == other)).all(dim=1)
                if ex is not None:
                    fits &= ~ex[rows[q] // s]
                expect = torch.bincount(codes[fits, j], minlength=table.vmax)
                assert counts[q].tolist() == expect.tolist()
            table.radix = None  # the fallback without int64 keys (chunked dense mask) agrees too
            assert torch.equal(table.digit_counts(tokens[rows], j, pairs) > 0, dense)
            table = CodeTable(codes, vocab)


VOCAB = [6, 5, 4, 3]


def tiny(seed: int) -> tuple[DiffusionRecommender, torch.Tensor]:
    codes = random_table(seed, VOCAB, 200)
    model = DiffusionRecommender.from_codes(
        codes, VOCAB, d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, max_len=6, seed=seed
    )
    return model.eval(), codes


SAMPLERS = [("tweedie", {"steps": 3}), ("euler", {"steps": 2, "strategy": "top_k", "top_k": 2}), ("ordered", {}),
            ("ordered", {"order": "random", "strategy": "top_p", "top_p": 0.7})]  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("sampler,opts", SAMPLERS)
def test_lists_identical_to_the_dense_masks(
    seed: int, sampler: str, opts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, codes = tiny(seed)
    gen = torch.Generator().manual_seed(seed)
    users, k = 7, 12
    history = torch.randint(0, len(codes), (users, 6), generator=gen)
    history[0, :3] = -1  # padding
    history[1] = torch.arange(6)
    exclude = torch.cat([history, torch.randint(0, len(codes), (users, 30), generator=gen)], dim=1)  # many excluded
    new = model.recommend(history, k=k, sampler=sampler, options={"beam": 4, **opts}, exclude=exclude)
    new_stats = dict(model.sample_stats)
    with monkeypatch.context() as m:
        m.setattr(DiffusionSampler, "allowed_digits", dense_allowed_digits)
        old = model.recommend(history, k=k, sampler=sampler, options={"beam": 4, **opts}, exclude=exclude)
    assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])
    assert new_stats == model.sample_stats
    for row, banned in zip(new[0].tolist(), exclude.tolist(), strict=True):  # exactly k allowed distinct items
        assert len(set(row)) == k and all(i >= 0 and i not in banned for i in row)


BEAMS = [("cpd", {"digits_per_step": 1}), ("cpd", {"digits_per_step": 2}), ("cpd", {"digits_per_step": 2, "first_beam": 3}),
         ("ordered-beam", {"order": [2, 0, 3, 1]})]  # fmt: skip


@pytest.mark.parametrize("sampler,opts", BEAMS)
def test_beam_lists_do_not_depend_on_the_chunk(sampler: str, opts: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Users chunked by their counted candidates: a tiny CHUNK (one user at a time) gives the same lists."""
    import stages.samplers.cpd as cpd

    model, codes = tiny(3)
    gen = torch.Generator().manual_seed(3)
    history = torch.randint(0, len(codes), (9, 6), generator=gen)
    exclude = torch.cat([history, torch.randint(0, len(codes), (9, 40), generator=gen)], dim=1)
    whole = model.recommend(history, k=10, sampler=sampler, options={"beam": 5, **opts}, exclude=exclude)
    chunks: list[list[tuple[int, int]]] = []
    spy = cpd.user_chunks

    def recorded(*args: object) -> list[tuple[int, int]]:
        chunks.append(spy(*args))  # type: ignore[arg-type]
        return chunks[-1]

    monkeypatch.setattr(cpd, "CHUNK", 40)
    monkeypatch.setattr(cpd, "user_chunks", recorded)
    parts = model.recommend(history, k=10, sampler=sampler, options={"beam": 5, **opts}, exclude=exclude)
    assert torch.equal(whole[0], parts[0]) and torch.equal(whole[1], parts[1])
    assert max(len(c) for c in chunks) > 1 and all(hi > lo for c in chunks for lo, hi in c)
    for row, banned in zip(parts[0].tolist(), exclude.tolist(), strict=True):
        assert len(set(row)) == 10 and all(i >= 0 and i not in banned for i in row)


def test_user_chunks_bound_the_counted_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.samplers.cpd as cpd
    from stages.samplers.validity import subsets

    codes = random_table(4, VOCAB, 300)
    table = CodeTable(codes, VOCAB)
    tokens = codes[torch.randint(0, 300, (12 * 3,), generator=torch.Generator().manual_seed(4))].clone().view(12, 3, 4)
    tokens[..., 1:] = -1  # one digit known: each beam matches ~300/6 items
    sets = subsets(4, 2)  # two digits per step: candidates per (beam, item) pair and set
    monkeypatch.setattr(cpd, "CHUNK", 3000)
    per_user = table.pair_counts(tokens.view(-1, 4)).view(12, 3).sum(1) * len(sets)
    expect = [sum(int((codes[:, 0] == d).sum()) for d in row[:, 0].tolist()) * len(sets) for row in tokens]
    assert per_user.tolist() == expect
    chunks = cpd.user_chunks(table, tokens, sets, 2)
    assert chunks[0][0] == 0 and chunks[-1][1] == 12 and all(a[1] == b[0] for a, b in itertools.pairwise(chunks))
    assert len(chunks) > 1
    for lo, hi in chunks:
        assert hi - lo == 1 or int(per_user[lo:hi].sum()) <= 3000
        assert hi == 12 or int(per_user[lo : hi + 1].sum()) > 3000  # greedy: the next user would not fit
    # one digit per step: (beam, position, digit) candidates, s·P·V per user whatever the catalogue
    one = torch.eye(4, dtype=torch.bool)[1:]
    assert cpd.user_chunks(table, tokens, one, 1) == [
        (lo, min(lo + 3000 // (3 * 3 * 6), 12)) for lo in range(0, 12, 3000 // 54)
    ]


ONE_DIGIT = [("cpd", {"digits_per_step": 1}), ("cpd", {"digits_per_step": 1, "renormalize": False}),
             ("cpd", {"digits_per_step": 1, "first_beam": 2}), ("ordered-beam", {"order": [3, 1, 0, 2]})]  # fmt: skip


@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.parametrize("sampler,opts", ONE_DIGIT)
def test_one_digit_candidates_equal_the_per_item_enumeration(
    seed: int, sampler: str, opts: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One digit per step, candidates enumerated as (beam, position, digit) [catalogue-free] give the
    lists the (beam, item) pair enumeration gives, with exclusions and every model call made."""
    import stages.samplers.cpd as cpd

    model, codes = tiny(seed)
    gen = torch.Generator().manual_seed(seed)
    history = torch.randint(0, len(codes), (8, 6), generator=gen)
    exclude = torch.cat([history, torch.randint(0, len(codes), (8, 50), generator=gen)], dim=1)
    for ex in (None, exclude):
        new = model.recommend(history, k=10, sampler=sampler, options={"beam": 6, **opts}, exclude=ex)
        with monkeypatch.context() as m:
            m.setattr(cpd, "_candidates_one_digit", lambda *args: cpd._candidates_by_item(*args[:8]))
            old = model.recommend(history, k=10, sampler=sampler, options={"beam": 6, **opts}, exclude=ex)
        assert torch.equal(new[0], old[0]) and torch.allclose(new[1], old[1], atol=1e-5)
        banned = [set()] * 8 if ex is None else [set(row) for row in ex.tolist()]
        for row, out in zip(new[0].tolist(), banned, strict=True):
            assert len(set(row)) == 10 and all(i >= 0 and i not in out for i in row)


@pytest.mark.parametrize("seed,vocab,n_items", [(7, [5, 4, 3], 50), (8, [3, 3, 3, 3], 70)])
def test_item_groups_from_sorted_keys_equal_row_unique(seed: int, vocab: list[int], n_items: int) -> None:
    """Groups of items sharing their digits on each position set, read from the sorted keys, equal
    torch.unique over the code rows: first member, size, representatives and set keys."""
    codes = random_table(seed, vocab, n_items)
    codes[::3, -1] = 0  # more sharing
    codes = torch.unique(codes, dim=0)[
        torch.randperm(len(torch.unique(codes, dim=0)), generator=torch.Generator().manual_seed(seed))
    ]
    table = CodeTable(codes, vocab)
    slow = CodeTable(codes, vocab)
    slow.radix = None  # the row-unique construction
    for t in range(2 ** len(vocab)):
        keep = torch.tensor([(t >> j) & 1 for j in range(len(vocab))], dtype=torch.bool)
        same = ((codes[:, None] == codes[None]) | ~keep).all(dim=-1)  # [N, N] items sharing digits on t
        ids = torch.arange(len(codes))
        assert table.rep_of()[t].tolist() == torch.where(same, ids, len(codes)).min(dim=1).values.tolist()
        assert table.group_size()[t].tolist() == same.sum(dim=1).tolist()
    assert torch.equal(table.representatives(), slow.representatives())
    assert torch.equal(table.group_key(), slow.group_key())
