"""Corruption training of tiger: the schedule, the forward corruption, the [TIMESTEP_t] token, each loss
term on hand-computed cases, the frozen other-view model, and exact resume with corruption on."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from stages.config.training import TrainLoopConfig
from stages.diffusion.input_corruption import alpha_bar_schedule, corrupt_tokens, draw_timesteps
from stages.models.noise_head import NoiseHead, noise_bce
from stages.models.tiger import Tiger
from stages.models.tiger_corruption import LOSS_TERMS, code_token_ids, kl_divergence
from stages.training.loop import fit
from stages.training.validation import make_validator

SIZES = dict(d_model=16, d_kv=4, d_ff=32, n_heads=2, n_layers=1, n_decoder_layers=1)


def corruption(**kw) -> dict:
    base = dict(
        timesteps=10, beta_max=0.1, cross_prob=0.5, lambda_mask=0.1, lambda_kl=0.1, noise_head_dropout=0.1, n_cross=0
    )
    return {**base, **kw}


def tiny_tiger(cls=Tiger, *, encoder_input: str = "items", dropout: float = 0.1, repeat_head: bool = False,
               **kw) -> Tiger:  # fmt: skip
    codes = torch.tensor([[i % 4, i // 4 % 4, i // 16] for i in range(30)])  # 30 distinct 3-digit codes
    return cls.from_codes(codes, [4, 4, 2], encoder_input=encoder_input, dropout=dropout, seed=5,
                          corruption=corruption(**kw), repeat_head=repeat_head, **SIZES)  # fmt: skip


def test_schedule_matches_hand_computed_values() -> None:
    # beta = [0, .1, .2, .3]; alphabar = [1, .9, .9*.8, .9*.8*.7]
    assert alpha_bar_schedule(4, 0.3).tolist() == pytest.approx([1.0, 0.9, 0.72, 0.504], abs=1e-12)
    # defaults T=100, beta_max=0.1: beta_1 = 0.1/99, alphabar_99 = prod (1 - s/990)
    ab = alpha_bar_schedule(100, 0.1)
    assert ab[1].item() == pytest.approx(1 - 0.1 / 99, abs=1e-12)
    assert ab[99].item() == pytest.approx(math.prod(1 - s / 990 for s in range(100)), rel=1e-9)
    assert alpha_bar_schedule(1, 0.5).tolist() == [1.0]


@pytest.mark.parametrize("t", [0, 5, 20, 60, 99])
def test_empirical_corruption_rate_is_binomial(t: int) -> None:
    n = 200_000
    tokens = torch.randint(2, 50, (n // 8, 8))
    ab = alpha_bar_schedule(100, 0.1)
    gen = torch.Generator().manual_seed(t)
    steps = torch.full((tokens.shape[0],), t)
    _, mask = corrupt_tokens(tokens, steps, alpha_bar=ab, protect=tokens < 2, low=2, high=50, generator=gen)
    p = 1 - ab[t].item()
    rate = mask.float().mean().item()
    assert abs(rate - p) <= 4.5 * math.sqrt(p * (1 - p) / n) + 1e-12, (rate, p)


def test_per_example_timesteps_set_per_example_rates() -> None:
    ab = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    tokens = torch.randint(2, 9, (3, 4000))
    _, mask = corrupt_tokens(tokens, torch.tensor([0, 1, 2]), alpha_bar=ab, protect=tokens < 2, low=2, high=9,
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    rates = mask.float().mean(1).tolist()
    assert rates[0] == 0.0 and rates[2] == 1.0 and abs(rates[1] - 0.5) < 0.03
    steps = draw_timesteps(20_000, 7, generator=torch.Generator().manual_seed(1))
    counts = torch.bincount(steps, minlength=7)
    assert steps.min() == 0 and steps.max() == 6 and (counts - 20_000 / 7).abs().max() < 200


def test_padding_and_special_tokens_are_never_corrupted() -> None:
    ab = alpha_bar_schedule(5, 1.0)  # alphabar at t=4 is 0: every other token is corrupted
    tokens = torch.randint(0, 20, (64, 30))  # 0 = pad and 1 = eos among them
    protect = tokens < 2
    pool = torch.arange(100, 110)
    out, mask = corrupt_tokens(tokens, torch.full((64,), 4), alpha_bar=ab, protect=protect, low=2, high=20,
                               cross_pool=pool, cross_prob=0.5, generator=torch.Generator().manual_seed(2))  # fmt: skip
    assert protect.any() and torch.equal(out[protect], tokens[protect]) and not mask[protect].any()
    assert mask[~protect].all() and (out[~protect] >= 2).all()


def test_cross_view_replacements_come_only_from_the_exclusive_pool() -> None:
    ab = alpha_bar_schedule(3, 1.0)
    tokens = torch.randint(2, 20, (500, 20))
    pool = torch.tensor([31, 37, 41, 43])  # the other view's exclusive tokens (outside this view's 2..19)
    t = torch.full((500,), 2)
    out, mask = corrupt_tokens(tokens, t, alpha_bar=ab, protect=tokens < 2, low=2, high=20, cross_pool=pool,
                               cross_prob=1.0, generator=torch.Generator().manual_seed(3))  # fmt: skip
    assert mask.all() and torch.isin(out, pool).all()
    assert set(out.unique().tolist()) == set(pool.tolist())  # uniform over the pool: every token drawn
    out, mask = corrupt_tokens(tokens, t, alpha_bar=ab, protect=tokens < 2, low=2, high=20, cross_pool=pool,
                               cross_prob=0.5, generator=torch.Generator().manual_seed(3))  # fmt: skip
    cross = torch.isin(out, pool)
    assert ((out >= 2) & (out < 20) | cross).all()
    assert abs(cross.float().mean().item() - 0.5) < 0.02
    # no pool: random tokens of this view only; same generator state, same corruption
    a = corrupt_tokens(
        tokens, t, alpha_bar=ab, protect=tokens < 2, low=2, high=20, generator=torch.Generator().manual_seed(4)
    )
    b = corrupt_tokens(
        tokens, t, alpha_bar=ab, protect=tokens < 2, low=2, high=20, generator=torch.Generator().manual_seed(4)
    )
    assert torch.equal(a[0], b[0]) and ((a[0] >= 2) & (a[0] < 20)).all()


def test_code_token_ids_are_the_used_tokens() -> None:
    codes = torch.tensor([[0, 1], [2, 1], [0, 0]])
    # offsets 2 and 2 + 3: digit-0 tokens 2, 4; digit-1 tokens 5, 6
    assert code_token_ids(codes, [3, 2]).tolist() == [2, 4, 5, 6]


@pytest.mark.parametrize("encoder_input", ["items", "tokens"])
def test_timestep_token_comes_first(encoder_input: str) -> None:
    model = tiny_tiger(encoder_input=encoder_input).eval()
    plain = Tiger.from_codes(model.codes, [4, 4, 2], encoder_input=encoder_input, seed=5, **SIZES)
    history = torch.tensor([[-1, 3, 7], [-1, -1, -1]])
    embed, mask = model.encoder_inputs(history, timesteps=torch.tensor([4, 9]))
    ref_embed, ref_mask = plain.encoder_inputs(history)
    assert embed.shape[1] == ref_embed.shape[1] + 1 and mask[:, 0].tolist() == [1, 1]
    table = model.corruption.extra_embed.weight  # rows 0..T-1 = [TIMESTEP_t]
    assert torch.equal(embed[0, 0], table[4]) and torch.equal(embed[1, 0], table[9])
    assert torch.equal(mask[:, 1:], ref_mask) and torch.equal(embed[:, 1:], ref_embed)  # same T5 init, same rest
    # inference reads t = 0: the encoder states the beam search uses are those of [TIMESTEP_0]
    zero, _ = model.encoder_inputs(history, timesteps=torch.zeros(2, dtype=torch.int64))
    assert torch.equal(model.encoder_inputs(history)[0], zero)
    # the extra input ids: V + t (timestep), V + T + k (cross-view token k)
    v = model.vocab_size
    ids = torch.tensor([3, v + 2])
    assert torch.equal(model.corruption.embed(model.t5.shared, ids), torch.stack([model.t5.shared.weight[3], table[2]]))


def test_noise_bce_and_kl_on_hand_computed_cases() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 5.0]])
    corrupted = torch.tensor([[True, False], [False, True]])
    valid = torch.tensor([[True, True], [True, False]])  # the last one is padding: left out
    expected = (math.log(2) + math.log(1 + math.e**2) + math.log(1 + math.e**-1)) / 3
    assert noise_bce(logits, corrupted, valid).item() == pytest.approx(expected, rel=1e-6)
    assert noise_bce(logits, corrupted, torch.zeros_like(valid)).item() == 0.0
    p, q = torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.75])
    assert kl_divergence(p.log(), q.log()).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), rel=1e-6)
    head = NoiseHead(8, per_position=3, dropout=0.1)
    assert [type(m).__name__ for m in head.net] == ["Linear", "GELU", "Dropout", "Linear"]
    assert head(torch.zeros(2, 5, 8)).shape == (2, 15)  # 5 items x 3 tokens, token order


def test_total_loss_is_the_weighted_sum_and_the_other_model_gets_no_gradient() -> None:
    model = tiny_tiger(dropout=0.0, noise_head_dropout=0.0, lambda_mask=0.3, lambda_kl=0.2).train()
    batch = {"history": torch.tensor([[-1, 3, 7, 9], [1, 2, 3, 4], [-1, -1, -1, 5]]), "target": torch.tensor([4, 8, 0])}
    torch.manual_seed(0)
    loss = model.loss(batch)
    terms = model.loss_terms
    assert list(terms) == list(LOSS_TERMS) and terms["loss_kl"].item() == 0.0  # no other view: no KL
    assert loss.item() == pytest.approx(terms["loss_ce"].item() + 0.3 * terms["loss_mask"].item(), rel=1e-6)

    twin = copy.deepcopy(model)  # the same weights: both read the same corrupted input -> KL 0
    model.corruption.set_other(twin)
    torch.manual_seed(0)
    loss = model.loss(batch)
    assert model.loss_terms["loss_kl"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        for p in twin.t5.lm_head.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(0)
    loss = model.loss(batch)
    t = model.loss_terms
    assert t["loss_kl"].item() > 0.01
    assert loss.item() == pytest.approx(
        t["loss_ce"].item() + 0.3 * t["loss_mask"].item() + 0.2 * t["loss_kl"].item(), rel=1e-6
    )
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in twin.parameters())
    assert model.corruption.noise_head.net[0].weight.grad.abs().sum() > 0
    assert not any(k.startswith("corruption._other") for k in model.state_dict())


def test_eval_mode_loss_and_recommend_read_the_clean_input() -> None:
    model = tiny_tiger().eval()
    batch = {"history": torch.tensor([[-1, 3, 7], [1, 2, 3]]), "target": torch.tensor([4, 8])}
    state = torch.get_rng_state()
    first = model.loss(batch)
    assert torch.equal(torch.get_rng_state(), state)  # no corruption draws outside training
    assert torch.equal(model.loss(batch), first)
    items, _ = model.recommend(batch["history"], k=5)
    assert items.shape == (2, 5) and (items >= 0).all()


class Interrupting(Tiger):
    at = -1
    calls = 0

    def loss(self, batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return super().loss(batch)


def test_resume_with_corruption_is_bit_identical(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    history = torch.randint(-1, 30, (120, 5), generator=gen)
    train = {"history": history, "target": torch.randint(0, 30, (120,), generator=gen)}
    validate = make_validator(history[:20], train["target"][:20], batch_size=20)
    c = TrainLoopConfig(lr=3e-3, batch_size=16, max_epochs=2, warmup_steps=2, eval_every=5, patience=0,
                        checkpoint_every=4, log_every=3)  # fmt: skip

    def run(model: Tiger, work: Path, resume: bool = False):
        return fit(model=model, train=train, validate=validate, cfg=c, seed=9, workdir=work, resume=resume)

    ref_model = tiny_tiger(n_cross=3)
    ref = run(ref_model, tmp_path / "ref")
    stopping = tiny_tiger(Interrupting, n_cross=3)
    stopping.at = 11
    with pytest.raises(KeyboardInterrupt):
        run(stopping, tmp_path / "cut")
    resumed = tiny_tiger(n_cross=3)
    res = run(resumed, tmp_path / "cut", resume=True)
    assert all(
        torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), ref_model.state_dict().values(), strict=True)
    )
    keys = ("step", "loss", "loss_ce", "loss_mask", "val_ndcg@10")
    assert [[r.get(k) for k in keys] for r in res.log] == [[r.get(k) for k in keys] for r in ref.log]
    assert all(r["loss_mask"] > 0 for r in ref.log if r["loss"] is not None)


def test_corruption_training_uses_the_repeat_heads_mixture() -> None:
    plain = tiny_tiger(dropout=0.0, noise_head_dropout=0.0).train()
    repeat = tiny_tiger(dropout=0.0, noise_head_dropout=0.0, repeat_head=True).train()
    batch = {"history": torch.tensor([[-1, 3, 7, 9], [1, 2, 3, 4]]), "target": torch.tensor([7, 2])}  # both repeats
    losses = []
    for model in (plain, repeat):
        torch.manual_seed(0)  # the same corruption for both
        model.loss(batch)
        losses.append(model.loss_terms["loss_ce"].item())
    with torch.no_grad():
        repeat.repeat.gate.bias.fill_(-30.0)  # g ~ 0: the generator alone, the plain cross-entropy
    torch.manual_seed(0)
    repeat.loss(batch)
    assert repeat.loss_terms["loss_ce"].item() == pytest.approx(losses[0], rel=1e-5)
    with torch.no_grad():
        repeat.repeat.gate.bias.fill_(30.0)  # g ~ 1: the pointer alone, -log(attention on the target) / D
    torch.manual_seed(0)
    repeat.loss(batch)
    assert repeat.loss_terms["loss_ce"].item() < 0.5 * losses[0]  # a pointer over 4 items beats 30-way codes
