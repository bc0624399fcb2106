"""Validity constraint and the cpd / tweedie / euler / ordered samplers of the diffusion model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch

from gdr_cli.errors import GdrError
from stages.diffusion.corruption import MASK
from stages.models import row_chunks
from stages.models.diffusion import DiffusionRecommender
from stages.samplers import make_sampler
from stages.samplers.base import SamplerOptions, top_distinct
from stages.samplers.cpd import CPDSampler
from stages.samplers.validity import CodeTable


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors run fastest on one thread (thread hand-offs dominate on a shared 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


VOCAB = [3, 4, 2]
CODES = torch.tensor(list(itertools.product(range(3), range(4), range(2))))[::2]  # [12, 3], last digit 0
CODES = torch.cat([CODES, torch.tensor([[1, 3, 1], [2, 0, 1]])])  # [14, 3]


@pytest.fixture(scope="module")
def model() -> DiffusionRecommender:
    m = DiffusionRecommender.from_codes(
        CODES, VOCAB, d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, max_len=4, seed=1
    )
    return m.eval()


HISTORY = torch.tensor([[-1, 1, 2, 3], [4, 5, 6, 7], [-1, -1, -1, 0], [13, 12, 11, 10], [9, 8, 7, 6]])


def check_valid(items: torch.Tensor, scores: torch.Tensor, k: int) -> None:
    assert items.shape == (len(HISTORY), k) and scores.shape == items.shape and scores.dtype == torch.float32
    for row, sc in zip(items.tolist(), scores.tolist(), strict=True):
        real = [i for i in row if i >= 0]
        assert all(0 <= i < len(CODES) for i in real) and len(set(real)) == len(real)
        finite = [s for s in sc if s != float("-inf")]
        assert finite == sorted(finite, reverse=True) and len(finite) == len(real)


# --- validity ----------------------------------------------------------------------------------


def test_allowed_tokens_by_hand() -> None:
    table = CodeTable(CODES, VOCAB)
    ok = table.allowed(torch.tensor([[1, MASK, MASK], [MASK, 3, MASK]]))  # [2, 3, 4]
    assert ok[0, 1, :4].tolist() == [True, True, True, True]
    assert ok[0, 2, :2].tolist() == [True, True]  # (1, 3, 1) exists
    assert ok[1, 0, :3].tolist() == [True, True, True] and ok[1, 2, :2].tolist() == [True, True]
    ok = table.allowed(torch.tensor([[2, 2, MASK]]))
    assert ok[0, 2, :2].tolist() == [True, False]
    assert table.item_of(torch.tensor([[1, 3, 1], [1, 3, 0], [0, 0, 1]])).tolist() == [12, 7, -1]


def test_allowed_from_few_pairs_equals_digit_counts() -> None:
    # cpd reads the allowed digits of every masked position from the beams' (row, item) pairs when
    # they are few (one scatter), else counts them by binary search: the same digits either way
    table = CodeTable(CODES, VOCAB)
    tokens = torch.tensor([[1, MASK, MASK], [MASK, 3, MASK], [2, 0, MASK], [MASK, MASK, 1], [0, 0, 0]])
    few = table.allowed_if_few(tokens)
    assert few is not None and few.shape == (5, 3, 4)
    for j in range(3):
        rows = (tokens[:, j] < 0).nonzero().squeeze(1)
        assert torch.equal(few[rows, j], table.digit_counts(tokens[rows], j) > 0)
    assert table.allowed_if_few(torch.full((2, 3), MASK)) is None  # 14 pairs per row > 4 digits: counted instead


def test_prefix_errors() -> None:
    table = CodeTable(CODES, VOCAB)
    assert table.parse_prefix({"0": 2}).tolist() == [2, -1, -1]
    assert table.parse_prefix([-1, 3, -1]).tolist() == [-1, 3, -1]
    with pytest.raises(GdrError, match="no item has the prefix"):
        table.parse_prefix({0: 0, 2: 1})
    with pytest.raises(GdrError, match="out of range"):
        table.parse_prefix({1: 4})
    with pytest.raises(GdrError, match="position 5"):
        table.parse_prefix({5: 0})
    with pytest.raises(GdrError, match="digits but codes have 3"):
        table.parse_prefix([0, 1])


def test_top_distinct_merges_duplicates_keeping_max() -> None:
    items = torch.tensor([[3, 5, 3, -1, 7]])
    score = torch.tensor([[-2.0, -1.0, -0.5, 0.0, -3.0]])
    out, sc = top_distinct(items, score, 4)
    assert out.tolist() == [[3, 5, 7, -1]] and sc[0, :3].tolist() == [-0.5, -1.0, -3.0]


# --- samplers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler,opts",
    [
        ("cpd", {"digits_per_step": 1}),
        ("cpd", {"digits_per_step": 2}),
        ("cpd", {"digits_per_step": 3}),
        ("tweedie", {"steps": 4}),
        ("euler", {"steps": 4}),
        ("tweedie", {"steps": 4, "strategy": "top_k", "top_k": 2}),
        ("euler", {"steps": 4, "strategy": "top_p", "top_p": 0.5}),
        ("ordered-beam", {"order": [2, 0, 1]}),
        ("ordered", {"strategy": "direct", "order": [2, 0, 1]}),
        ("ordered", {"strategy": "direct", "order": "random"}),
        ("ordered", {"strategy": "top_k", "top_k": 2}),
        ("ordered", {"strategy": "top_p", "top_p": 0.8}),
    ],
)
def test_every_sampler_returns_distinct_real_items(model: DiffusionRecommender, sampler: str, opts: dict) -> None:
    items, scores = model.recommend(HISTORY, k=5, sampler=sampler, options={"beam": 6, **opts})
    check_valid(items, scores, 5)
    assert (items >= 0).all()  # exactly k distinct items: the catalogue has 14
    again, _ = model.recommend(HISTORY, k=5, sampler=sampler, options={"beam": 6, **opts})
    assert torch.equal(items, again)  # deterministic under a fixed seed


def restricted_logp(model: DiffusionRecommender, history: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    logp = model.denoise(model.encode(history), torch.zeros(len(tokens), dtype=torch.long), tokens)
    return model.table().restrict(logp, tokens)


def test_cpd_all_digits_at_once_is_exact(model: DiffusionRecommender) -> None:
    # one step filling all n digits with a beam ≥ N ranks every item by Σ_j log p(c_j | all masked)
    items, scores = model.recommend(
        HISTORY[:1], k=len(CODES), sampler="cpd", options={"beam": 20, "digits_per_step": 3}
    )
    lp = restricted_logp(model, HISTORY[:1], torch.full((1, 3), MASK))[0]  # [n, V]
    brute = lp.gather(1, CODES.T).sum(0)  # [N]
    order = brute.argsort(descending=True)
    assert items[0].tolist() == order.tolist()
    assert torch.allclose(scores[0], brute[order], atol=1e-5)


def test_ordered_beam_with_wide_beam_is_exact_chain_rule(model: DiffusionRecommender) -> None:
    order = [2, 0, 1]
    opts = {"beam": 20, "order": order, "renormalize": True}
    items, scores = model.recommend(HISTORY[1:2], k=len(CODES), sampler="ordered-beam", options=opts)
    # every item's chain-rule score in that order: one batched pass over its n partial codes
    steps = []
    for i, j in enumerate(order):
        partial = CODES.clone()
        partial[:, order[i:]] = MASK
        steps.append((partial, j))
    tokens = torch.cat([p for p, _ in steps])  # [n*N, n]
    lp = restricted_logp(model, HISTORY[1:2], tokens).view(len(order), len(CODES), 3, -1)
    brute = sum(lp[i, torch.arange(len(CODES)), j, CODES[:, j]] for i, (_, j) in enumerate(steps))  # [N]
    assert torch.allclose(scores[0], brute[items[0]], atol=1e-5)
    assert torch.allclose(brute[items[0]], brute.sort(descending=True).values)


def test_cpd_throughput_structure_two_digits_per_step(
    model: DiffusionRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = {"beam": 5, "renormalize": False}  # raw scores read every live beam's log-probs
    model.recommend(HISTORY, k=5, sampler="cpd", options={**raw, "digits_per_step": 2})
    assert model.sample_stats["nfe"] == 1 + 5  # one pass on the all-masked code, then one per beam
    model.recommend(HISTORY, k=5, sampler="cpd", options={**raw, "digits_per_step": 1})
    assert model.sample_stats["nfe"] == 1 + 5 + 5
    # renormalised, a beam only one item completes scores 0 whatever the model says: no pass for it
    renormalised = {"beam": 5, "renormalize": True}
    for d in (1, 2):
        fast = model.recommend(HISTORY, k=5, sampler="cpd", options={**renormalised, "digits_per_step": d})
        calls = model.sample_stats["nfe"]
        with monkeypatch.context() as m:
            m.setattr(CPDSampler, "needless", lambda self, state: None)
            every = model.recommend(HISTORY, k=5, sampler="cpd", options={**renormalised, "digits_per_step": d})
            assert model.sample_stats["nfe"] == {1: 11, 2: 6}[d] and calls < model.sample_stats["nfe"]
        # same lists; scores equal up to float rounding (a subset of rows runs as its own batch)
        assert torch.equal(fast[0], every[0]) and torch.allclose(fast[1], every[1], atol=1e-5)


@pytest.mark.parametrize("sampler", ["tweedie", "euler"])
def test_cache_gives_identical_samples_with_fewer_evaluations(model: DiffusionRecommender, sampler: str) -> None:
    opts = {"beam": 8, "steps": 12, "seed": 3}
    cached = model.recommend(HISTORY, k=5, sampler=sampler, options={**opts, "use_cache": True})
    nfe_cached = model.sample_stats["nfe"]
    plain = model.recommend(HISTORY, k=5, sampler=sampler, options={**opts, "use_cache": False})
    nfe_plain = model.sample_stats["nfe"]
    assert torch.equal(cached[0], plain[0]) and torch.allclose(cached[1], plain[1])
    assert nfe_cached < nfe_plain


def test_seed_changes_stochastic_samples(model: DiffusionRecommender) -> None:
    runs = {
        tuple(
            model.recommend(HISTORY, k=5, sampler="tweedie", options={"beam": 4, "steps": 3, "seed": s})[0]
            .flatten()
            .tolist()
        )
        for s in range(3)
    }
    assert len(runs) > 1


@pytest.mark.parametrize("sampler", ["cpd", "tweedie", "euler", "ordered"])
def test_prefix_is_honoured(model: DiffusionRecommender, sampler: str) -> None:
    items, scores = model.recommend(HISTORY, k=3, sampler=sampler, options={"beam": 4, "prefix": {"0": 1, "2": 0}})
    check_valid(items, scores, 3)
    got = items[items >= 0]
    assert len(got) > 0 and (CODES[got][:, 0] == 1).all() and (CODES[got][:, 2] == 0).all()


def test_exclude_history(model: DiffusionRecommender) -> None:
    opts = SamplerOptions(beam=len(CODES))
    items, _ = model.recommend(HISTORY, k=len(CODES), sampler="ordered", options=opts)
    assert (items >= 0).all()
    items, _ = model.recommend(HISTORY[:, 2:], k=len(CODES), sampler="ordered", options=opts, exclude=HISTORY)
    for row, hist in zip(items.tolist(), HISTORY.tolist(), strict=True):
        real = {i for i in row if i >= 0}
        assert not real & set(hist) and len(real) == len(CODES) - len({h for h in hist if h >= 0})
    for sampler in ("cpd", "tweedie"):
        items, _ = model.recommend(HISTORY, k=4, sampler=sampler, options={"beam": 8}, exclude=HISTORY)
        assert not any(set(row) & set(hist) for row, hist in zip(items.tolist(), HISTORY.tolist(), strict=True))


def test_bad_sampler_inputs(model: DiffusionRecommender) -> None:
    with pytest.raises(GdrError, match="digits per step 4"):
        model.recommend(HISTORY, k=3, sampler="cpd", options={"digits_per_step": 4})
    with pytest.raises(GdrError, match="cannot use sampler 'beam'"):
        model.recommend(HISTORY, k=3, sampler="beam")
    with pytest.raises(GdrError, match="not a permutation"):
        model.recommend(HISTORY, k=3, sampler="ordered", options={"order": [0, 0, 1]})
    with pytest.raises(GdrError, match="no item has the prefix"):
        model.recommend(HISTORY, k=3, sampler="tweedie", options={"prefix": [0, 0, 1]})
    with pytest.raises(GdrError, match="unknown diffusion sampler"):
        make_sampler("ddim", table=model.table(), schedule=None, options=None, k=3)


def test_popularity_model_rejects_cpd() -> None:
    from stages.models.popularity import Popularity

    pop = Popularity(n_items=5)
    with pytest.raises(GdrError, match="cannot use sampler 'cpd'"):
        pop.recommend(torch.tensor([[0, 1]]), k=2, sampler="cpd")


def test_chunked_validity_and_beams_match_unchunked(
    model: DiffusionRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stages.samplers.cpd as cpd
    import stages.samplers.validity as validity

    opts = {"beam": 6, "digits_per_step": 2}
    whole = model.recommend(HISTORY, k=5, sampler="cpd", options=opts)
    tokens = torch.tensor([[1, MASK, MASK], [MASK, 3, MASK], [2, 2, MASK]])
    allowed = CodeTable(CODES, VOCAB).allowed(tokens)
    monkeypatch.setattr(validity, "CHUNK", 50)
    monkeypatch.setattr(cpd, "CHUNK", 50)
    assert torch.equal(CodeTable(CODES, VOCAB).allowed(tokens), allowed)
    parts = model.recommend(HISTORY, k=5, sampler="cpd", options=opts)
    assert torch.equal(whole[0], parts[0]) and torch.allclose(whole[1], parts[1])


def test_pairs_by_binary_search_equal_item_match() -> None:
    table = CodeTable(CODES, VOCAB)
    tokens = torch.tensor([[MASK, MASK, MASK], [1, MASK, MASK], [MASK, 3, MASK], [2, 2, MASK], [0, 1, 0], [0, 0, 1]])
    rows, items = table.pairs(tokens)
    dense = torch.zeros(len(tokens), len(CODES), dtype=torch.bool)
    dense[rows, items] = True
    assert torch.equal(dense, table.match(tokens)) and len(rows) == int(table.match(tokens).sum())


def test_cpd_two_digits_per_step_with_wide_beam_is_exact(model: DiffusionRecommender) -> None:
    # with a beam wider than every candidate, an item's score is the best over its fill orders
    # (a pair of positions, then the last one) of the two restricted steps' log-probs
    opts = {"beam": 64, "digits_per_step": 2, "renormalize": True}
    items, scores = model.recommend(HISTORY[3:4], k=len(CODES), sampler="cpd", options=opts)
    first = restricted_logp(model, HISTORY[3:4], torch.full((1, 3), MASK))[0]  # [n, V]
    best = torch.full((len(CODES),), float("-inf"))
    for last in range(3):
        pair = [j for j in range(3) if j != last]
        partial = CODES.clone()
        partial[:, last] = MASK
        lp = restricted_logp(model, HISTORY[3:4].expand(len(CODES), -1), partial)  # [N, n, V]
        total = (
            first[pair[0], CODES[:, pair[0]]]
            + first[pair[1], CODES[:, pair[1]]]
            + lp[torch.arange(len(CODES)), last, CODES[:, last]]
        )
        best = torch.maximum(best, total)
    assert sorted(items[0].tolist()) == list(range(len(CODES)))
    assert torch.allclose(scores[0], best[items[0]], atol=1e-5)
    assert torch.allclose(scores[0], best.sort(descending=True).values, atol=1e-5)


def test_restricted_digits_equal_dense_restrict() -> None:
    table = CodeTable(CODES, VOCAB)
    tokens = torch.tensor([[MASK, MASK, MASK], [1, MASK, MASK], [MASK, 3, MASK], [2, 2, MASK], [0, MASK, 0]])
    logp = torch.log_softmax(torch.randn(len(tokens), 3, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    rows, items = table.pairs(tokens)
    dense = table.restrict(logp, tokens)[rows[:, None], torch.arange(3), CODES[items]]  # [M, n]
    assert torch.allclose(table.restricted_digits(logp, rows, items), dense, atol=1e-6)  # dense branch (all-masked row)
    sparse = rows > 0
    unused = torch.zeros(16, 3, 4)  # rows no pair reads: few pairs per log-prob entry take the sparse branch
    got = table.restricted_digits(torch.cat([logp[1:], unused]), rows[sparse] - 1, items[sparse])
    assert torch.allclose(got, dense[sparse], atol=1e-6)


def test_masked_slot_heads_equal_all_heads(model: DiffusionRecommender) -> None:
    # sampling runs the last block and the output heads on the masked slots only; training
    # (autograd on) runs every slot: same log-probs, for mixed and for equal masked counts per row
    mixed = torch.tensor([[MASK, MASK, MASK], [1, MASK, MASK], [MASK, 3, 0], [2, 2, 1], [0, MASK, 0]])
    equal = torch.tensor([[1, MASK, MASK], [MASK, 3, MASK], [MASK, MASK, 0], [2, MASK, MASK]]).repeat(
        5, 1
    )  # 4 rows per user
    ctx = model.encode(HISTORY)
    with torch.no_grad():  # sampling's context: cross-attention q and output projections folded in (`fold`)
        folded = model.encode(HISTORY)
    assert ctx.folded is None and folded.folded is not None
    rows_unsorted = torch.tensor([4, 0, 2, 1, 3])  # not sorted by user: the per-row path
    for rows, tokens in ((torch.arange(5), mixed), (4, equal), (torch.arange(5).repeat_interleave(4), equal),
                         (rows_unsorted, mixed)):  # fmt: skip
        with torch.no_grad():
            fast = model.denoise(folded, rows, tokens)
        with torch.enable_grad():
            full = model.denoise(ctx, rows, tokens).detach()
        assert torch.equal(torch.isinf(fast), torch.isinf(full))
        assert torch.allclose(fast[~torch.isinf(fast)], full[~torch.isinf(full)], atol=1e-5)


def test_chunked_sampling_sublayers_equal_one_chunk(
    model: DiffusionRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sampling runs the feed-forward over row chunks and the cross-attention (its projections folded into
    # the keys/values) a few users at a time (`row_chunks`): the same log-probs as one chunk, and the
    # pieces equal their plain torch forms
    block = model.decoder[0]
    x = torch.randn(5, 12, 16, generator=torch.Generator().manual_seed(0))
    q = torch.randn(5, 2, 12, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ctx = model.encode(HISTORY)  # keep: user 2 has one real history item, the others more
    tokens = torch.tensor([[1, MASK, MASK], [MASK, 3, MASK], [MASK, MASK, 0], [2, MASK, MASK]]).repeat(5, 1)
    with torch.no_grad():
        whole = model.denoise(ctx, 4, tokens)
        monkeypatch.setattr(row_chunks, "CHUNK_BYTES", 4 * 32 * 7)  # 7 rows, 1 user per chunk
        parts = model.denoise(ctx, 4, tokens)
        mlp = row_chunks.residual_mlp(x, block.ln3, *block.mlp)
        att = row_chunks.user_attention(q, ctx.kv[0], ctx.keep)
        y = torch.randn(5, 12, 16, generator=torch.Generator().manual_seed(2))  # normed queries, 12 per user
        fold = row_chunks.folded_attention(y, *ctx.folded[0], block.heads) + block.out2.bias
        heads = block.q(y).view(5, 12, 2, 8).transpose(1, 2)
        plain = torch.nn.functional.scaled_dot_product_attention(heads, ctx.kv[0][0], ctx.kv[0][1], attn_mask=ctx.keep)
        plain = block.out2(plain.transpose(1, 2).reshape(5, 12, 16))
    torch.testing.assert_close(parts, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(fold, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(mlp, x + block.mlp(block.ln3(x)), atol=1e-6, rtol=0)
    ref = torch.nn.functional.scaled_dot_product_attention(q, ctx.kv[0][0], ctx.kv[0][1], attn_mask=ctx.keep)
    torch.testing.assert_close(att, ref, atol=1e-6, rtol=0)
    assert not ctx.keep.all()  # the mask is exercised


@pytest.mark.parametrize("sampler", ["cpd", "tweedie", "ordered"])
def test_no_users_gives_empty_top_k(model: DiffusionRecommender, sampler: str) -> None:
    items, scores = model.recommend(HISTORY[:0], k=3, sampler=sampler, options={"beam": 4})
    assert items.shape == (0, 3) and scores.shape == (0, 3)


def test_cpd_merges_beams_that_complete_to_the_same_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beams naming the same items through different fill orders are one candidate, so a beam as wide
    as k returns more distinct items than when only identical partial codes merge (the old rule)."""
    from stages.samplers.validity import CodeTable

    g = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [torch.randint(0, 8, (24, 3), generator=g), torch.zeros(24, 1, dtype=torch.long)], 1
    )  # like rqkmeans
    m = DiffusionRecommender.from_codes(
        codes, [8, 8, 8, 1], d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, max_len=4, seed=1
    ).eval()
    opts = SamplerOptions(beam=10, digits_per_step=1)
    merged = one_round(m, "cpd", opts, 10)
    t = torch.arange(16)[:, None]
    monkeypatch.setattr(CodeTable, "group_key", lambda self: t * self.n_items + torch.arange(self.n_items))
    m2 = DiffusionRecommender.from_codes(
        codes, [8, 8, 8, 1], d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, max_len=4, seed=1
    ).eval()
    plain = one_round(m2, "cpd", opts, 10)
    assert (merged >= 0).sum() > (plain >= 0).sum()
    for row in merged.tolist():
        real = [i for i in row if i >= 0]
        assert len(real) == len(set(real))
    # later rounds fill the rest: exactly k whatever the merging rule
    assert (m.recommend(HISTORY, k=10, sampler="cpd", options=opts)[0] >= 0).all()
    assert (m2.recommend(HISTORY, k=10, sampler="cpd", options=opts)[0] >= 0).all() and m2.sample_stats["rounds"] > 1


def one_round(
    model: DiffusionRecommender, sampler: str, opts: object, k: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """The items of the sampler's first round alone (no refill) -> [B, k] (-1 = none)."""
    from stages.diffusion.schedules import make_schedule
    from stages.samplers.exclusion import ItemSets

    smp = make_sampler(
        sampler, table=model.table(), schedule=make_schedule(model.schedule_name), options=SamplerOptions.of(opts), k=k
    )
    state = smp.init_state(len(HISTORY), torch.device("cpu"))
    if exclude is not None:
        state.extra["exclude"] = ItemSets.from_lists(exclude, model.codes.shape[0])
    with torch.no_grad():
        state, _ = model._search(smp, model.encode(HISTORY), state, True)
    return smp.finish(state, k)[0]


def test_whole_code_step_skips_the_fold_and_keeps_the_lists(
    model: DiffusionRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the whole code in one step reads the model once per user: no folded cross-attention is built for it
    folds = []
    real = model.encode
    monkeypatch.setattr(model, "encode", lambda history, fold=True: folds.append(fold) or real(history, fold))
    for d in (3, 1):
        model.recommend(HISTORY, k=5, sampler="cpd", options={"beam": 5, "digits_per_step": d})
    assert folds == [False, True]
    fast = model.recommend(HISTORY, k=len(CODES), sampler="cpd", options={"beam": 5, "digits_per_step": 3})
    assert model.sample_stats["nfe"] == 1
    monkeypatch.setattr(CPDSampler, "one_pass", lambda self: False)  # the folded path
    folded = model.recommend(HISTORY, k=len(CODES), sampler="cpd", options={"beam": 5, "digits_per_step": 3})
    assert torch.equal(fast[0], folded[0]) and torch.allclose(fast[1], folded[1], atol=1e-5)
