"""Search options of the diffusion samplers on hand-made cases: cpd's two widths, raw vs
renormalised scores (each equal to its brute-force definition), exactly k items with excluded
items removed during the search, RADD's strategies and ancestral orders, and per-user noise."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch

from stages.diffusion.schedules import make_schedule
from stages.models.diffusion import DiffusionRecommender
from stages.samplers import make_sampler
from stages.samplers.base import SamplerOptions
from stages.samplers.validity import CodeTable


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- a context-free "denoiser": fixed per-position digit probabilities --------------------------

ABC = torch.tensor([[0, 0], [0, 1], [1, 2]])  # items A, B, C
ABC_P = [[0.5, 0.5, 0.0], [0.45, 0.35, 0.2]]  # p(digit) at position 0 (2 digits) and 1 (3 digits)


def fixed_logp(p: list[list[float]]) -> torch.Tensor:
    return torch.log(torch.tensor(p))  # [n, V] (-inf beyond a level's codebook)


def run_sampler(
    name: str,
    codes: torch.Tensor,
    vocab: list[int],
    logp: torch.Tensor,
    k: int,
    users: int = 1,
    exclude: torch.Tensor | None = None,
    **opts: object,
) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Drive a sampler with the same log-probs [n, V] for every row; one round -> (items, scores, last state)."""
    smp = make_sampler(
        name, table=CodeTable(codes, vocab), schedule=make_schedule("loglinear"), options=SamplerOptions.of(opts), k=k
    )
    state = smp.init_state(users, torch.device("cpu"))
    if exclude is not None:
        state.extra["exclude"] = exclude
    while not smp.done(state):
        b, s, n = state.tokens.shape
        state = smp.step(state, logp.expand(b, s, n, -1))
    items, scores = smp.finish(state, k)
    return items, scores, state


def brute_cpd(codes: torch.Tensor, logp: torch.Tensor, renormalize: bool) -> torch.Tensor:
    """cpd's score of each item with an unbounded beam, one digit per step: the best over fill orders
    of Σ log p(digit), p raw or renormalised over the digits some item with the filled ones has."""
    n = codes.shape[1]
    best = torch.full((len(codes),), float("-inf"))
    for i, code in enumerate(codes.tolist()):
        for order in itertools.permutations(range(n)):
            total, filled = 0.0, {}
            for j in order:
                lp = logp[j, code[j]].item()
                if renormalize:
                    ok = {c[j] for c in codes.tolist() if all(c[q] == v for q, v in filled.items())}
                    lp -= math.log(sum(math.exp(logp[j, d].item()) for d in ok))
                total += lp
                filled[j] = code[j]
            best[i] = max(best[i].item(), total)
    return best


def test_renormalized_and_raw_scores_rank_differently_and_match_brute_force() -> None:
    logp = fixed_logp(ABC_P)
    raw, raw_score, _ = run_sampler("cpd", ABC, [2, 3], logp, k=3, beam=8, digits_per_step=1)  # the default
    ren, ren_score, _ = run_sampler("cpd", ABC, [2, 3], logp, k=3, beam=8, digits_per_step=1, renormalize=True)
    # by hand: raw A = .5·.45, B = .5·.35, C = .5·.2 (order-free); renormalised, the best order:
    # C = .5 · 1 (position 0 first, then only digit 2 is left), A = .45 · 1, B = .35 · 1 (position 1 first)
    assert raw[0].tolist() == [0, 1, 2] and torch.allclose(raw_score[0].exp(), torch.tensor([0.225, 0.175, 0.1]))
    assert ren[0].tolist() == [2, 0, 1] and torch.allclose(ren_score[0].exp(), torch.tensor([0.5, 0.45, 0.35]))
    for items, scores, renorm in ((raw, raw_score, False), (ren, ren_score, True)):
        brute = brute_cpd(ABC, logp, renorm)
        assert torch.allclose(scores[0], brute[items[0]], atol=1e-6)
    # a bigger random table: both definitions hold item by item
    g = torch.Generator().manual_seed(1)
    codes = torch.unique(torch.randint(0, 3, (14, 3), generator=g), dim=0)
    logp = torch.log_softmax(torch.randn(3, 3, generator=g) * 2, dim=-1)
    for renorm in (False, True):
        items, scores, _ = run_sampler(
            "cpd", codes, [3, 3, 3], logp, k=len(codes), beam=200, digits_per_step=1, renormalize=renorm
        )
        brute = brute_cpd(codes, logp, renorm)
        assert sorted(items[0].tolist()) == list(range(len(codes)))
        assert torch.allclose(scores[0], brute[items[0]], atol=1e-5)
        assert torch.allclose(scores[0], brute.sort(descending=True).values, atol=1e-5)


def test_first_beam_is_the_width_of_the_first_step() -> None:
    g = torch.Generator().manual_seed(2)
    codes = torch.unique(torch.randint(0, 4, (30, 3), generator=g), dim=0)
    logp = torch.log_softmax(torch.randn(3, 4, generator=g), dim=-1)
    for first in (1, 2, 5):
        _, _, state = run_sampler("cpd", codes, [4, 4, 4], logp, k=3, beam=6, first_beam=first, digits_per_step=1)
        assert state.tokens.shape[1] == 6
    # one beam after the first step: every item found shares its first filled digit
    items, _, _ = run_sampler("cpd", codes, [4, 4, 4], logp, k=3, beam=6, first_beam=1, digits_per_step=1)
    found = codes[items[0][items[0] >= 0]]
    assert any(len(set(found[:, j].tolist())) == 1 for j in range(3))
    wide, _, _ = run_sampler("cpd", codes, [4, 4, 4], logp, k=3, beam=6, digits_per_step=1)
    same, _, _ = run_sampler("cpd", codes, [4, 4, 4], logp, k=3, beam=6, first_beam=6, digits_per_step=1)
    assert torch.equal(wide, same)


def test_first_beam_counts_function_evaluations() -> None:
    m = tiny_model()
    opts = {"beam": 5, "first_beam": 2, "digits_per_step": 1, "renormalize": False}  # raw: every live beam runs
    m.recommend(HISTORY, k=2, sampler="cpd", options=opts)
    assert m.sample_stats["rounds"] == 1 and m.sample_stats["nfe"] == 1 + 2 + 5


# --- exactly k items, excluded items removed during the search ----------------------------------

VOCAB = [3, 4, 2]
CODES = torch.cat(
    [torch.tensor(list(itertools.product(range(3), range(4), range(2))))[::2], torch.tensor([[1, 3, 1], [2, 0, 1]])]
)
HISTORY = torch.tensor([[-1, 1, 2, 3], [4, 5, 6, 7], [-1, -1, -1, 0], [13, 12, 11, 10], [9, 8, 7, 6]])


def tiny_model() -> DiffusionRecommender:
    return DiffusionRecommender.from_codes(
        CODES, VOCAB, d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, max_len=4, seed=1
    ).eval()


def favouring(model: DiffusionRecommender, banned: torch.Tensor) -> None:
    """Make the model's prediction (whatever the context) strongly prefer the digits of `banned` items."""
    weight = torch.full((3, 4), -6.0)
    for item in banned.tolist():
        for j, digit in enumerate(CODES[item].tolist()):
            weight[j, digit] = 0.0
    weight[2, 2:] = weight[1, 4:] = float("-inf")  # beyond the codebooks
    weight[0, 3] = float("-inf")
    lp = torch.log_softmax(weight, dim=-1)

    def denoise(ctx: object, rows: object, noisy: torch.Tensor) -> torch.Tensor:
        out = lp.expand(len(noisy), -1, -1).clone()
        known = noisy >= 0
        carried = torch.full_like(out, float("-inf")).scatter_(2, noisy.clamp(min=0)[..., None], 0.0)
        return torch.where(known[..., None], carried, out)

    model.denoise = denoise  # type: ignore[method-assign]


EXCLUDED = torch.tensor([0, 1, 2, 3, 4, 5, 6])  # items with first digit 0 or (1, 0..2, 0)
SAMPLERS = [("cpd", {"digits_per_step": 1}), ("cpd", {"digits_per_step": 2}), ("cpd", {"digits_per_step": 1, "renormalize": False}),
            ("cpd", {"digits_per_step": 3}), ("cpd", {"digits_per_step": 3, "whole_code": "beam"}),
            ("ordered-beam", {}), ("ordered", {}), ("ordered", {"order": "random", "strategy": "top_p", "top_p": 0.5}),
            ("tweedie", {"steps": 3}), ("euler", {"steps": 2, "strategy": "top_k", "top_k": 1})]  # fmt: skip


@pytest.mark.parametrize("sampler,opts", SAMPLERS)
def test_exactly_k_items_when_the_model_prefers_excluded_ones(sampler: str, opts: dict) -> None:
    model = tiny_model()
    favouring(model, EXCLUDED)
    users = len(HISTORY)
    exclude = EXCLUDED.expand(users, -1)
    k = 5
    # the naive way (search ignoring the history, then drop it) leaves fewer than k
    naive = model.recommend(HISTORY, k=k, sampler=sampler, options={"beam": k, **opts})[0]
    kept = [[i for i in row if i >= 0 and i not in EXCLUDED.tolist()] for row in naive.tolist()]
    assert min(len(row) for row in kept) < k
    items, scores = model.recommend(HISTORY, k=k, sampler=sampler, options={"beam": k, **opts}, exclude=exclude)
    for row, sc in zip(items.tolist(), scores.tolist(), strict=True):
        assert len(set(row)) == k and all(i >= 0 and i not in EXCLUDED.tolist() for i in row)
        assert sc == sorted(sc, reverse=True) and all(math.isfinite(s) for s in sc)
    # the whole allowed catalogue (7 items) when k asks for it, and no more when k asks for more
    rest = model.recommend(HISTORY, k=len(CODES), sampler=sampler, options={"beam": 3, **opts}, exclude=exclude)[0]
    for row in rest.tolist():
        assert sorted(i for i in row if i >= 0) == list(range(7, 14)) and row.count(-1) == 7


def test_cpd_with_exclusion_equals_brute_force_over_the_allowed_items() -> None:
    # one step filling every digit with a wide beam: the items are the allowed ones by raw Σ log p
    model = tiny_model()
    favouring(model, EXCLUDED)
    items, scores = model.recommend(
        HISTORY[:1],
        k=7,
        sampler="cpd",
        options={"beam": 20, "digits_per_step": 3, "renormalize": False},
        exclude=EXCLUDED[None],
    )
    lp = model.denoise(None, None, torch.full((1, 3), -1))[0]
    brute = lp.gather(1, CODES.T).sum(0)  # [N]
    brute[EXCLUDED] = float("-inf")
    assert sorted(items[0].tolist()) == list(range(7, 14))
    assert torch.allclose(scores[0], brute[items[0]]) and torch.allclose(
        scores[0], brute.sort(descending=True).values[:7]
    )


@pytest.mark.parametrize("renormalize", [False, True])
def test_whole_code_beam_equals_scoring_every_item_when_wide_and_can_miss_when_narrow(renormalize: bool) -> None:
    """`--whole-code beam` searches the exact whole-code scores over the trie: with a beam as wide as the catalogue
    it returns the exhaustive lists (excluded items left out, scores equal); a narrow one misses an item whose
    first digit scores low and whose later digits score high."""
    g = torch.Generator().manual_seed(4)
    codes = torch.unique(torch.randint(0, 5, (60, 3), generator=g), dim=0)
    model = DiffusionRecommender.from_codes(codes, [5, 5, 5], max_len=4, d_model=16, n_heads=2, d_ff=32, seed=0)
    model.eval()
    history = torch.randint(0, len(codes), (6, 4), generator=g)
    exclude = torch.cat([history, torch.randint(0, len(codes), (6, 9), generator=g)], dim=1)
    base = {"digits_per_step": 3, "renormalize": renormalize}
    for ex in (None, exclude):
        exact = model.recommend(history, k=12, sampler="cpd", options={"beam": 12, **base}, exclude=ex)
        wide = model.recommend(history, k=12, sampler="cpd", options={"beam": len(codes), "whole_code": "beam", **base},
                               exclude=ex)  # fmt: skip
        assert torch.equal(wide[0], exact[0]) and torch.allclose(wide[1], exact[1], atol=1e-6)
        assert model.sample_stats["nfe"] == 1.0  # one model call per user either way
    # by hand: items (0, 0) .4·.1, (1, 1) .35·.9: a width-1 beam keeps digit 0 and never reaches (1, 1)
    logp = fixed_logp([[0.4, 0.35, 0.25], [0.1, 0.9, 0.0]])
    two = torch.tensor([[0, 0], [1, 1], [2, 0]])
    exact, _, _ = run_sampler("cpd", two, [3, 2], logp, k=1, beam=1, digits_per_step=2, renormalize=renormalize)
    narrow, _, _ = run_sampler("cpd", two, [3, 2], logp, k=1, beam=1, digits_per_step=2, whole_code="beam",
                               renormalize=renormalize)  # fmt: skip
    assert exact[0].tolist() == [1] and narrow[0].tolist() == [0]


def test_whole_code_beam_needs_the_whole_code_in_one_step() -> None:
    from gdr_cli.errors import GdrError

    with pytest.raises(GdrError, match="whole code of 2 digits in one step"):
        run_sampler("cpd", ABC, [2, 3], fixed_logp(ABC_P), k=2, digits_per_step=1, whole_code="beam")
    with pytest.raises(GdrError, match="unknown whole-code search"):
        run_sampler("cpd", ABC, [2, 3], fixed_logp(ABC_P), k=2, digits_per_step=2, whole_code="trie")


def test_excluding_the_first_item_of_a_partial_code_keeps_the_partial_code() -> None:
    # items 0 = (0, 0) and 1 = (0, 1) share digit 0 at position 0; excluding item 0 (the partial
    # code's first item) must leave (0, _) open for item 1, which the model likes best
    codes = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
    logp = fixed_logp([[0.9, 0.1], [0.6, 0.4]])  # items by hand: .54 (excluded), .36, .06, .04
    for d in (1, 2):
        items, _, _ = run_sampler(
            "cpd",
            codes,
            [2, 2],
            logp,
            k=3,
            beam=3,
            digits_per_step=d,
            exclude=torch.tensor([[True, False, False, False]]),
        )
        assert items[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("digits", [2, 3])
def test_multi_digit_steps_with_exclusion_equal_brute_force(digits: int) -> None:
    """Raw scores are order-free, so with a beam wider than the catalogue cpd's list is every allowed item by
    Σ log p: the later multi-digit steps enumerate (beam, item) pairs over the masked position sets only."""
    g = torch.Generator().manual_seed(7)
    codes = torch.unique(torch.randint(0, 3, (90, 5), generator=g), dim=0)  # 5 digits: 2 + 2 + 1 or 3 + 2
    logp = torch.log_softmax(torch.randn(5, 3, generator=g), dim=-1)
    users = 3
    exclude = torch.zeros(users, len(codes), dtype=torch.bool)
    exclude[0, :20] = True  # the lowest ids: the first member of many partial codes
    exclude[1, torch.randperm(len(codes), generator=g)[:25]] = True
    items, scores, _ = run_sampler(
        "cpd", codes, [3] * 5, logp, k=len(codes), users=users, exclude=exclude, beam=400, digits_per_step=digits
    )
    brute = logp.gather(1, codes.T).sum(0)  # [N]
    for u in range(users):
        allowed = (~exclude[u]).nonzero().squeeze(1)
        want = brute[allowed].sort(descending=True).values
        got = items[u][items[u] >= 0]
        assert sorted(got.tolist()) == allowed.tolist()
        assert torch.allclose(scores[u][: len(got)], want, atol=1e-5)


# --- strategies, ancestral orders, per-user noise ----------------------------------------------


def frequencies(items: torch.Tensor, n_items: int) -> torch.Tensor:
    return torch.bincount(items.flatten(), minlength=n_items).float() / items.numel()


def test_ordered_direct_is_ancestral_sampling() -> None:
    logp = fixed_logp(ABC_P)
    # left to right: P(C) = .5 · 1, P(A) = .5 · .45/.8, P(B) = .5 · .35/.8
    _, _, state = run_sampler("ordered", ABC, [2, 3], logp, k=1, beam=6000, seed=3)
    got = frequencies(CodeTable(ABC, [2, 3]).item_of(state.tokens[0]), 3)
    assert torch.allclose(got, torch.tensor([0.28125, 0.21875, 0.5]), atol=0.02)
    # a random order per sample: the mixture of both orders (position 1 first: A .45, B .35, C .2)
    _, _, state = run_sampler("ordered", ABC, [2, 3], logp, k=1, beam=6000, seed=3, order="random")
    got = frequencies(CodeTable(ABC, [2, 3]).item_of(state.tokens[0]), 3)
    assert torch.allclose(got, torch.tensor([0.365625, 0.284375, 0.35]), atol=0.02)


@pytest.mark.parametrize("sampler", ["tweedie", "euler"])
def test_tweedie_strategy_is_honoured(sampler: str) -> None:
    logp = fixed_logp([[0.6, 0.4, 0.0], [0.45, 0.35, 0.2]])
    _, _, greedy = run_sampler(sampler, ABC, [2, 3], logp, k=1, beam=200, steps=1, strategy="top_k", top_k=1)
    assert (greedy.tokens[0] == torch.tensor([0, 0])).all()  # top-1: every sample takes the best digits, item A
    _, _, nucleus = run_sampler(sampler, ABC, [2, 3], logp, k=1, beam=200, steps=1, strategy="top_p", top_p=0.6)
    assert set(CodeTable(ABC, [2, 3]).item_of(nucleus.tokens[0]).tolist()) == {
        0,
        1,
    }  # digit 0 (mass .6 ≥ .6), then A or B (.5625 < .6)
    _, _, direct = run_sampler(sampler, ABC, [2, 3], logp, k=1, beam=200, steps=1)
    assert len(torch.unique(direct.tokens[0], dim=0)) == 3


@pytest.mark.parametrize("sampler,opts", [("tweedie", {"steps": 3}), ("euler", {"steps": 3, "strategy": "top_p", "top_p": 0.7}),
                                          ("ordered", {"order": "random"}), ("ordered", {"strategy": "top_k", "top_k": 2})])  # fmt: skip
def test_lists_do_not_depend_on_the_batch_size(sampler: str, opts: dict) -> None:
    model = tiny_model()
    history = HISTORY.repeat(13, 1)[:64]  # 64 users, some with equal histories
    ids = torch.arange(64) * 7 + 100  # user IDs key the noise
    exclude = HISTORY.repeat(13, 1)[:64]
    out = []
    for size in (1, 7, 64):
        parts = [model.recommend(history[lo : lo + size], k=4, sampler=sampler, exclude=exclude[lo : lo + size],
                                 options=SamplerOptions.of({"beam": 4, "seed": 5, **opts, "users": ids[lo : lo + size]}))
                 for lo in range(0, 64, size)]  # fmt: skip
        out.append((torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])))
    for items, scores in out[1:]:
        assert torch.equal(items, out[0][0]) and torch.allclose(scores, out[0][1], atol=1e-5)
    # equal histories with different IDs get different draws; another seed changes the lists
    assert not torch.equal(out[0][0][0], out[0][0][5])
    other = model.recommend(
        history,
        k=4,
        sampler=sampler,
        exclude=exclude,
        options=SamplerOptions.of({"beam": 4, "seed": 6, **opts, "users": ids}),
    )
    assert not torch.equal(other[0], out[0][0])
