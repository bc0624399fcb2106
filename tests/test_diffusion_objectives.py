"""t_dse (score entropy), label smoothing, the λ-DCE floor and the linear-β schedule's β_max, by hand."""

from __future__ import annotations

import inspect
import itertools
import math

import pytest
import torch

from stages.config.diffuse import DiffuseConfig
from stages.diffusion.corruption import MASK
from stages.diffusion.losses import LambdaDCE, make_loss, smoothed_nll
from stages.diffusion.schedules import Geometric, LinearBeta, make_schedule
from stages.models.diffusion import MODEL_KEYS, DiffusionRecommender


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_linear_beta_default_beta_max_by_hand() -> None:
    # T=3, β_max=0.1: β = [0, 0.05, 0.1], ᾱ = [1, 0.95, 0.855]
    s = LinearBeta(steps=3)
    assert torch.allclose(s.alpha_bar, torch.tensor([1.0, 0.95, 0.855], dtype=torch.float64))
    t = torch.tensor([0.25, 1.0], dtype=torch.float64)  # -> steps 1, 2
    assert torch.allclose(s.mask_prob(t), torch.tensor([0.05, 0.145], dtype=torch.float64))
    # weight (ᾱ_{s-1} - ᾱ_s) / (1 - ᾱ_s) · (T-1): 0.05/0.05·2 = 2, 0.095/0.145·2
    assert torch.allclose(s.weight(t), torch.tensor([2.0, 0.095 / 0.145 * 2], dtype=torch.float64))
    default = make_schedule("linear_beta")
    assert default.steps == 100 and float(default.alpha_bar[-1] / default.alpha_bar[-2]) == pytest.approx(0.9)
    assert float(make_schedule("linear_beta", beta_max=1.0).alpha_bar[-1]) == 0.0
    assert DiffuseConfig().beta_max == 0.1


def test_t_dse_weight_by_hand() -> None:
    # geometric schedule: σ̄(t) = σ_min^(1-t) σ_max^t, σ' = σ̄ ln(σ_max/σ_min), ρ = 1/(e^σ̄ - 1)
    loss = make_loss("t_dse", schedule="geometric")
    codes = torch.randint(5, (32, 4), generator=gen(1))
    v = loss.views(codes, gen(2))
    mask = v.noisy == MASK
    t = v.level.double()
    sigma = 1e-4 ** (1 - t) * 20.0**t
    expected = sigma * math.log(20.0 / 1e-4) / torch.expm1(sigma)
    assert torch.allclose(v.weight.double()[mask], expected[:, None].expand_as(v.weight)[mask], rtol=1e-5)
    at_half = math.sqrt(1e-4 * 20) * math.log(2e5) / math.expm1(math.sqrt(1e-4 * 20))  # t = 1/2 by hand: 11.94...
    assert float(Geometric().weight(torch.tensor([0.5], dtype=torch.float64))) == pytest.approx(at_half)
    assert at_half == pytest.approx(11.9355, rel=1e-4)
    # log-linear (ε=1e-3): σ' = (1-ε)/(1-(1-ε)t), ρ = (1-(1-ε)t)/((1-ε)t), σ'ρ = 1/t
    v = make_loss("t_dse").views(codes, gen(3))
    assert torch.allclose(v.weight[v.noisy == MASK], (1 / v.level)[:, None].expand_as(v.weight)[v.noisy == MASK])


def test_t_dse_equals_t_dce_for_a_normalised_denoiser_and_charges_excess_mass() -> None:
    codes = torch.randint(4, (16, 3), generator=gen(4))
    logits = torch.randn(16, 3, 4, generator=gen(5))
    normalised = lambda rows, noisy: torch.log_softmax(logits[rows], -1)  # noqa: E731
    dce = make_loss("t_dce")(normalised, codes, gen(6))
    dse = make_loss("t_dse")(normalised, codes, gen(6))
    assert dse.item() == pytest.approx(dce.item(), rel=1e-5)
    # outputs summing to 2 (every digit log 1/2): per masked digit w·(2 - 1 - log 1/2), vs w·(-log 1/2)
    doubled = lambda rows, noisy: torch.full((len(rows), 3, 4), math.log(0.5))  # noqa: E731
    v = make_loss("t_dse").views(codes, gen(6))
    total_w = v.weight.sum().item() / 16
    assert make_loss("t_dse")(doubled, codes, gen(6)).item() == pytest.approx(total_w * (1 + math.log(2)), rel=1e-5)
    assert make_loss("t_dce")(doubled, codes, gen(6)).item() == pytest.approx(total_w * math.log(2), rel=1e-5)


def test_label_smoothing_by_hand() -> None:
    # V = 4 but the level has 3 real digits (the 4th is -inf): p = [1/2, 1/4, 1/4]
    logp = torch.log(torch.tensor([[[0.5, 0.25, 0.25, 0.0]]]))
    target = torch.tensor([[0]])
    expected = 0.9 * math.log(2) + 0.1 * (math.log(2) + 2 * math.log(4)) / 3
    assert smoothed_nll(logp, target, 0.1).item() == pytest.approx(expected)
    assert smoothed_nll(logp, target, 0.0).item() == pytest.approx(math.log(2))
    # through the objective: a uniform model's k_dce is n log V whatever ε (smoothing a uniform target changes nothing)
    codes = torch.randint(6, (8, 4), generator=gen(7))
    uniform = lambda rows, noisy: torch.full((len(rows), 4, 6), -math.log(6))  # noqa: E731
    assert make_loss("k_dce", label_smoothing=0.3)(uniform, codes, gen(8)).item() == pytest.approx(4 * math.log(6))
    skewed = lambda rows, noisy: torch.log_softmax(torch.arange(6.0).expand(len(rows), 4, 6), -1)  # noqa: E731
    plain = make_loss("k_dce")(skewed, codes, gen(8)).item()
    smooth = make_loss("k_dce", label_smoothing=0.3)(skewed, codes, gen(8)).item()
    mean_nll = -torch.log_softmax(torch.arange(6.0), -1).mean().item()
    assert smooth == pytest.approx(0.7 * plain + 0.3 * 4 * mean_nll, rel=1e-5)  # k_dce weights sum to n per example


def test_lambda_floor_zero_is_the_unbiased_weight() -> None:
    assert DiffuseConfig(lambda_floor=0).lambda_floor == 0
    codes = torch.randint(5, (200, 6), generator=gen(9))
    v = LambdaDCE(0.0).views(codes, gen(10))
    mask = v.noisy == MASK
    assert torch.allclose(v.weight[mask], (1 / v.level)[:, None].expand_as(v.weight)[mask])
    assert v.weight.max() > 1 / 0.05  # a small λ keeps its full weight


def test_model_passes_beta_max_and_smoothing() -> None:
    codes = torch.tensor([[0, 1], [1, 0], [1, 1]])
    m = DiffusionRecommender.from_codes(codes, [2, 2], d_model=8, n_heads=2, enc_layers=1, dec_layers=1, d_ff=16, max_len=2,
                                        loss="t_dse", schedule="linear_beta", beta_max=0.3, label_smoothing=0.1)  # fmt: skip
    assert m.objective.name == "t_dse" and m.objective.label_smoothing == 0.1
    assert float(m.objective.schedule.alpha_bar[-1] / m.objective.schedule.alpha_bar[-2]) == pytest.approx(0.7)


def test_every_objective_field_reaches_the_model() -> None:
    # DiffuseConfig's objective/schedule fields are DiffusionRecommender arguments (no silently ignored key)
    objective = {"loss", "schedule", "lambda_floor", "label_smoothing", "beta_max", "augment_factor", "mask_prob"}
    assert objective <= MODEL_KEYS and objective <= set(DiffuseConfig.model_fields)
    assert set(inspect.signature(DiffusionRecommender.__init__).parameters) >= MODEL_KEYS


@pytest.mark.parametrize("loss", ["diffgrm", "k_dce"])
def test_grouped_views_read_the_encoding_like_per_row_views(loss: str) -> None:
    # example-major views take the no-copy cross-attention path; scrambling the rows forces the per-row gather:
    # the same views must get the same log-probs either way (dropout off, gradients on as in training)
    codes = torch.randint(5, (30, 3), generator=gen(4))
    model = DiffusionRecommender.from_codes(codes, [5, 5, 5], max_len=6, d_model=16, n_heads=2, d_ff=32,
                                            enc_layers=1, dec_layers=1, dropout=0.0, loss=loss)  # fmt: skip
    history = torch.randint(30, (8, 6), generator=gen(5))
    ctx = model._context(history, *model._memory(history))
    v = model.objective.views(codes[:8], gen(6))
    grouped = model._logp_fn(ctx)(v.rows, v.noisy)
    order = torch.randperm(len(v.rows), generator=gen(7))
    scrambled = model._logp_fn(ctx)(v.rows[order], v.noisy[order])
    assert torch.allclose(grouped[order], scrambled, atol=1e-5)
    assert len(v.rows) == 8 * (4 if loss == "diffgrm" else 1)


@pytest.mark.parametrize("own_head", [False, True])
def test_item_loss_is_the_whole_code_steps_ranking_softmaxed_over_the_catalogue(own_head: bool) -> None:
    # the item-level cross-entropy scores every item as cpd does with the whole code in one step (raw scores):
    # softmaxing the sampler's scores of all N items gives the same per-user loss, with or without its own head
    codes = torch.tensor(list(itertools.product(range(3), range(4), range(2))))[::2]  # [12, 3] distinct codes
    model = DiffusionRecommender.from_codes(codes, [3, 4, 2], max_len=4, d_model=16, n_heads=2, d_ff=32, enc_layers=1,
                                            dec_layers=1, dropout=0.0, item_loss=0.5, item_head=own_head)  # fmt: skip
    model.eval()
    if own_head:  # a head of its own: the whole-code step reads it, the digit heads stay the objective's
        with torch.no_grad():
            model.item_emb.weight.normal_(0, 1.0, generator=gen(9))
    history = torch.randint(12, (5, 4), generator=gen(1))
    target = torch.randint(12, (5,), generator=gen(2))
    with torch.no_grad():
        nll = model.item_nll(model.encode(history), target)
        items, scores = model.recommend(history, k=12, sampler="cpd", options={"digits_per_step": 3, "beam": 12})
    assert bool((items >= 0).all())
    full = torch.full((5, 12), float("-inf")).scatter(1, items, scores)  # [B, N] the sampler's score of every item
    expected = -torch.log_softmax(full, dim=1).gather(1, target[:, None]).mean()
    assert float(nll) == pytest.approx(float(expected), abs=1e-5)
    # and the training loss adds it with its weight (same seed: same masks)
    plain = DiffusionRecommender.from_codes(codes, [3, 4, 2], max_len=4, d_model=16, n_heads=2, d_ff=32,
                                            enc_layers=1, dec_layers=1, dropout=0.0, item_loss=0.0)  # fmt: skip
    batch = {"history": history, "target": target}
    diff = model.loss(batch) - plain.loss(batch)
    assert float(diff.detach()) == pytest.approx(0.5 * float(nll), abs=1e-5)
    if own_head:  # the other step sizes read the digit heads, shared with the plain model (same seed, same weights)
        with torch.no_grad():
            one = model.recommend(history, k=5, sampler="cpd", options={"digits_per_step": 1, "beam": 5})
            ref = plain.eval().recommend(history, k=5, sampler="cpd", options={"digits_per_step": 1, "beam": 5})
        assert torch.equal(one[0], ref[0])
        assert not torch.equal(items, plain.recommend(history, k=12, sampler="cpd", options={"digits_per_step": 3})[0])


def test_item_loss_over_a_large_catalogue_is_a_seeded_sampled_softmax() -> None:
    # above item_loss_items the softmax runs over the batch's targets and that many uniform draws from the
    # step's generator: the same as the full scores restricted to those items, by hand
    codes = torch.tensor(list(itertools.product(range(3), range(4), range(2))))[::2]  # [12, 3]
    kwargs = dict(max_len=4, d_model=16, n_heads=2, d_ff=32, enc_layers=1, dec_layers=1, dropout=0.0)
    history = torch.randint(12, (5, 4), generator=gen(1))
    target = torch.randint(12, (5,), generator=gen(2))
    model = DiffusionRecommender.from_codes(codes, [3, 4, 2], item_loss=1.0, item_loss_items=3, **kwargs).eval()
    with torch.no_grad():
        ctx = model.encode(history)
        sampled = float(model.item_nll(ctx, target, gen(3)))
        logp = model.denoise(ctx, 1, torch.full((5, 3), MASK))
        scores = sum(logp[:, j, codes[:, j]] for j in range(3))  # [5, 12] every item's whole-code score
        items = torch.unique(torch.cat([target, torch.randint(12, (3,), generator=gen(3))]))
        assert len(items) < 12  # a real subset
        expected = -torch.log_softmax(scores[:, items], dim=1)[torch.arange(5), torch.searchsorted(items, target)]
        assert sampled == pytest.approx(float(expected.mean()), abs=1e-5)
        assert float(model.item_nll(ctx, target, gen(3))) == sampled  # seeded
        model.item_loss_items = 12  # the whole catalogue fits: the full softmax
        full = -torch.log_softmax(scores, dim=1)[torch.arange(5), target].mean()
        assert float(model.item_nll(ctx, target, gen(3))) == pytest.approx(float(full), abs=1e-5)
