"""Schedules, forward masking, objectives and the exact any-order likelihood bound."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from gdr_cli.errors import GdrError
from stages.diffusion.corruption import MASK, mask_by_prob, mask_exactly
from stages.diffusion.likelihood import all_masks, any_order_bound
from stages.diffusion.losses import make_loss
from stages.diffusion.schedules import Geometric, LinearBeta, LogLinear, make_schedule
from stages.models.diffusion import DiffusionRecommender


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_codes() -> tuple[torch.Tensor, list[int]]:
    vocab = [3, 4, 2]
    codes = torch.tensor(list(itertools.product(range(3), range(4), range(2))))[::2]  # [12, 3]
    return codes, vocab


# --- schedules ---------------------------------------------------------------------------------


def test_loglinear_weight_is_one_over_t() -> None:
    s = LogLinear(eps=0.0)
    t = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(s.mask_prob(t), t)
    assert torch.allclose(s.weight(t), 1 / t)


def test_linear_beta_alpha_bar_by_hand() -> None:
    # T=3, β_max=1: β = [0, 1/2, 1], ᾱ = [1, 1/2, 0]
    s = LinearBeta(steps=3, beta_max=1.0)
    assert torch.allclose(s.alpha_bar, torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))
    t = torch.tensor([0.25, 0.5, 1.0])  # -> steps 1, 1, 2
    assert torch.allclose(s.mask_prob(t), torch.tensor([0.5, 0.5, 1.0]))
    # weight = (ᾱ_{s-1} - ᾱ_s) / (1 - ᾱ_s) · (T-1): step 1 -> 0.5/0.5·2 = 2, step 2 -> 0.5/1·2 = 1
    assert torch.allclose(s.weight(t), torch.tensor([2.0, 2.0, 1.0]))


def test_geometric_weight_is_dlogm() -> None:
    s = Geometric()
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    h = 1e-6
    numeric = (s.mask_prob(t + h) - s.mask_prob(t - h)) / (2 * h) / s.mask_prob(t)
    assert torch.allclose(s.weight(t), numeric, rtol=1e-4)


def test_unknown_schedule_lists_known() -> None:
    with pytest.raises(GdrError, match="unknown noise schedule") as err:
        make_schedule("cosine")
    assert "loglinear" in err.value.line() and "linear_beta" in err.value.line()
    with pytest.raises(GdrError):
        LinearBeta(steps=1)


# --- corruption --------------------------------------------------------------------------------


def test_mask_exactly_masks_k_and_is_seeded() -> None:
    codes = torch.arange(40).view(8, 5)
    k = torch.tensor([0, 1, 2, 3, 4, 5, 1, 2])
    noisy, mask = mask_exactly(codes, k, gen(1))
    assert torch.equal(mask.sum(1), k)
    assert torch.equal(noisy == MASK, mask) and torch.equal(noisy[~mask], codes[~mask])
    again, _ = mask_exactly(codes, k, gen(1))
    assert torch.equal(noisy, again)


def test_mask_by_prob_at_least_one() -> None:
    codes = torch.zeros(500, 4, dtype=torch.long)
    _, mask = mask_by_prob(codes, torch.full((500,), 0.01), gen(2), at_least_one=True)
    assert (mask.sum(1) >= 1).all()
    _, mask = mask_by_prob(codes, torch.full((500,), 0.5), gen(2))
    assert 0.4 < mask.float().mean() < 0.6


# --- objectives --------------------------------------------------------------------------------


def test_t_dce_weight_one_over_t_on_masked_only() -> None:
    codes = torch.randint(5, (64, 4), generator=gen(3))
    v = make_loss("t_dce", schedule="loglinear").views(codes, gen(4))
    mask = v.noisy == MASK
    assert torch.equal(v.weight > 0, mask)
    expected = (1 / v.level)[:, None].expand_as(v.weight)
    assert torch.allclose(v.weight[mask], expected[mask])
    # stratified: one t per 1/B slice
    assert torch.equal(torch.floor(v.level.sort().values * 64 - 1e-3).long().clamp(min=0), torch.arange(64))


def test_k_dce_weight_n_over_k() -> None:
    codes = torch.randint(5, (30, 4), generator=gen(5))
    v = make_loss("k_dce").views(codes, gen(6))
    k = (v.noisy == MASK).sum(1)
    assert torch.equal(k, v.level) and set(k.tolist()) == {1, 2, 3, 4}
    assert torch.allclose(v.weight.sum(1), torch.full((30,), 4.0))  # k digits × n/k
    assert torch.allclose(v.weight.max(1).values, 4 / k.float())


def test_lambda_dce_weight_floor() -> None:
    codes = torch.randint(5, (100, 6), generator=gen(7))
    v = make_loss("lambda_dce", lambda_floor=0.2).views(codes, gen(8))
    mask = v.noisy == MASK
    expected = (1 / v.level.clamp(min=0.2))[:, None].expand_as(v.weight)
    assert torch.allclose(v.weight[mask], expected[mask]) and (v.weight[~mask] == 0).all()
    assert v.weight.max() <= 5.0 + 1e-6 and v.level.min() < 0.2


def test_diffgrm_views_loss_only_on_masked() -> None:
    codes = torch.randint(5, (10, 4), generator=gen(9))
    v = make_loss("diffgrm", augment_factor=3, mask_prob=0.3).views(codes, gen(10))
    mask = v.noisy == MASK
    assert v.rows.tolist() == [i for i in range(10) for _ in range(3)]  # example-major: an example's views adjacent
    assert (mask.sum(1) >= 1).all() and torch.equal(v.weight > 0, mask)
    assert torch.allclose(v.weight.sum(1), torch.full((30,), 1 / 3))
    assert torch.equal(v.noisy[~mask], codes[v.rows][~mask])


def test_loss_value_of_uniform_model_by_hand() -> None:
    # a model predicting uniformly over V digits: k_dce = E[(n/k) · k · log V] = n log V exactly
    codes = torch.randint(6, (16, 4), generator=gen(11))
    uniform = lambda rows, noisy: torch.full((len(rows), 4, 6), -math.log(6))  # noqa: E731
    assert make_loss("k_dce")(uniform, codes, gen(12)).item() == pytest.approx(4 * math.log(6))
    assert make_loss("diffgrm", augment_factor=2)(uniform, codes, gen(12)).item() == pytest.approx(math.log(6))


def test_unknown_loss_lists_known() -> None:
    with pytest.raises(GdrError, match="unknown diffusion loss") as err:
        make_loss("mse")
    assert "k_dce" in err.value.line() and "diffgrm" in err.value.line()


# --- the exact bound ---------------------------------------------------------------------------


def test_all_masks_weights_sum_to_n() -> None:
    masks, w = all_masks(4)
    assert masks.shape == (15, 4)
    assert (masks.sum(1) * w).sum().item() == pytest.approx(4.0)  # Σ_k (1/k)·k = n


def tiny_model(**kw) -> DiffusionRecommender:
    codes, vocab = tiny_codes()
    model = DiffusionRecommender.from_codes(codes, vocab, d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32,
                                            max_len=4, seed=0, **kw)  # fmt: skip
    return model.eval()


def test_bound_equals_brute_force_k_dce_expectation() -> None:
    model = tiny_model()
    history = torch.tensor([[-1, 1, 2, 3], [4, 5, 6, 7], [-1, -1, -1, 0]])
    target = torch.tensor([3, 8, 11])
    bound = model.likelihood_bound(history, target)
    ctx = model.encode(history)
    n = 3
    for u in range(3):
        x = model.codes[target[u]]
        expect = 0.0  # E_{k~U{1..n}} (n/k) E_{|mask|=k} Σ_masked -log p(x_j | unmasked)
        for k in range(1, n + 1):
            combos = list(itertools.combinations(range(n), k))
            for masked in combos:
                noisy = x.clone()
                noisy[list(masked)] = MASK
                logp = model.denoise(ctx, torch.tensor([u]), noisy[None])[0]
                nll = -sum(logp[j, x[j]].item() for j in masked)
                expect += (1 / n) * (n / k) * nll / len(combos)
        assert bound[u].item() == pytest.approx(expect, rel=1e-5)


def test_bound_of_uniform_predictor_is_n_log_v() -> None:
    codes = torch.randint(5, (7, 3), generator=gen(13))
    uniform = lambda rows, noisy: torch.full((len(rows), 3, 5), -math.log(5))  # noqa: E731
    assert torch.allclose(any_order_bound(uniform, codes), torch.full((7,), 3 * math.log(5), dtype=torch.float64))


def test_model_carries_unmasked_digits_and_never_predicts_mask() -> None:
    model = tiny_model()
    ctx = model.encode(torch.tensor([[0, 1, 2, 3]]))
    noisy = torch.tensor([[2, MASK, MASK]])
    logp = model.denoise(ctx, torch.tensor([0]), noisy)  # [1, 3, V=4]
    assert logp[0, 0, 2] == 0 and torch.isinf(logp[0, 0, [0, 1, 3]]).all()
    assert torch.isinf(logp[0, 2, 2:]).all()  # level 2 has 2 digits: the rest is never predicted
    assert torch.allclose(logp[0, 1].exp().sum(), torch.tensor(1.0))


def test_model_init_and_training_masks_are_seeded() -> None:
    a, b = tiny_model(loss="t_dce"), tiny_model(loss="t_dce")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    batch = {"history": torch.tensor([[0, 1, 2, 3], [-1, 4, 5, 6]]), "target": torch.tensor([4, 7])}
    a.eval(), b.eval()
    assert a(batch).item() == b(batch).item()
    a.train(), b.train()
    torch.manual_seed(0)
    la = a(batch)
    torch.manual_seed(0)
    assert la.item() == b(batch).item() and int(a.noise_step) == 1
    la.backward()
    assert all(p.grad is not None for p in a.parameters())


@pytest.mark.parametrize("rows", [[0, 0, 0, 1, 3, 3, 4, 4, 4], [0, 1, 1, 2, 2, 3, 4], [4, 0, 3, 0, 1]])
def test_cross_attention_grouped_by_user_equals_the_per_row_copy(
    rows: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampling rows sorted by user attend to their user's keys/values in place ([users, slots, n] queries);
    the result is the per-row copy's (unsorted rows or too much padding fall back to that copy)."""
    import stages.models.diffusion as diffusion

    codes, vocab = tiny_codes()
    model = DiffusionRecommender.from_codes(
        codes, vocab, d_model=16, n_heads=2, enc_layers=1, dec_layers=2, d_ff=32, max_len=5
    ).eval()
    history = torch.randint(0, len(codes), (5, 5), generator=gen(3))
    history[1, :2] = -1
    index = torch.tensor(rows)
    noisy = codes[torch.randint(0, len(codes), (len(rows),), generator=gen(4))].clone()
    noisy[torch.rand(noisy.shape, generator=gen(5)) < 0.5] = MASK
    with torch.no_grad():
        ctx = model.encode(history)
        grouped = model.denoise(ctx, index, noisy)
        monkeypatch.setattr(diffusion, "_user_slots", lambda *args: None)
        copied = model.denoise(ctx, index, noisy)
    assert torch.allclose(grouped, copied, atol=1e-5) and torch.equal(torch.isinf(grouped), torch.isinf(copied))


def test_user_slots_by_hand() -> None:
    from stages.models.diffusion import _user_slots

    slots = _user_slots(torch.tensor([0, 0, 0, 1, 3, 3, 4, 4, 4]), 5)
    assert slots is not None and slots[0].tolist() == [0, 1, 2, 0, 0, 1, 0, 1, 2] and slots[1] == 3
    assert _user_slots(torch.tensor([4, 0, 3]), 5) is None  # not sorted by user
    assert _user_slots(torch.tensor([2, 2, 2, 2]), 5) is None  # 5 users x 4 slots > 2 x 4 rows


def test_history_dropout_applies_in_training_only() -> None:
    codes = torch.tensor([[i // 4, i % 4] for i in range(12)])
    kw = dict(d_model=16, n_heads=2, enc_layers=1, dec_layers=1, d_ff=32, dropout=0.0, seed=5)
    model = DiffusionRecommender.from_codes(codes, [3, 4], history_dropout=0.5, **kw)
    plain = DiffusionRecommender.from_codes(codes, [3, 4], **kw)
    batch = {"history": torch.tensor([[3, 5, 6], [-1, 7, 2]]), "target": torch.tensor([1, 10])}
    model.eval(), plain.eval()
    torch.testing.assert_close(model.loss(batch), plain.loss(batch))  # same noise draws: evaluation reads it all
    model.train(), plain.train()
    torch.manual_seed(0)
    dropped = {round(model.loss(batch).item(), 6) for _ in range(8)}
    torch.manual_seed(0)
    full = {round(plain.loss(batch).item(), 6) for _ in range(8)}
    assert dropped != full  # training drops history items
