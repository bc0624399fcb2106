"""DiffuRec: the six beta schedules against hand-computed values, the loss-aware timestep sampler,
respaced reverse chains, exact top-K with exclusion, batch-independent sampling, and learning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from gdr_cli.errors import GdrError
from stages.config.diffurec import DiffurecConfig, DiffurecTrainConfig
from stages.config.preprocess import PreprocessConfig, SyntheticConfig
from stages.data.sequences import eval_histories
from stages.diffusion.gaussian.noise import keyed_normal, row_keys
from stages.diffusion.gaussian.respace import ReverseChain, respace, spaced_timesteps
from stages.diffusion.gaussian.schedules import SCHEDULES, alphas_cumprod, beta_schedule
from stages.diffusion.gaussian.timesteps import LossSecondMomentSampler, UniformSampler, make_timestep_sampler
from stages.models.diffurec import Diffurec, DiffurecFamily
from stages.models.family import FamilyData
from stages.models.popularity import Popularity
from stages.training.loop import fit
from stages.training.validation import make_validator

T = 32


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----- beta schedules -------------------------------------------------------------------------


def cos_bar(tau: float, s: float) -> float:
    return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2


def hand_betas(name: str, s: int) -> float:
    """β_s of the named schedule for T = 32, written out from the formulas (c = 1000/32 = 31.25)."""
    if name == "linear":  # c·1e-4 .. c·0.02 = 0.003125 .. 0.625 in 31 equal gaps
        return 0.003125 + s * (0.625 - 0.003125) / 31
    if name == "trunc_lin":  # lifted by 0.01: 0.013125 .. 0.635 (the end is < 1, kept)
        return 0.013125 + s * (0.635 - 0.013125) / 31
    if name == "pw_lin":  # 0.013125 -> 0.003125 in 10 values, then 0.003125 -> 0.625 in 22 values
        return 0.013125 + s * (0.003125 - 0.013125) / 9 if s < 10 else 0.003125 + (s - 10) * (0.625 - 0.003125) / 21
    if name == "cosine":
        return min(1 - cos_bar((s + 1) / 32, 0.008) / cos_bar(s / 32, 0.008), 0.999)
    if name == "sqrt":
        return min(1 - (1 - math.sqrt((s + 1) / 32 + 1e-4)) / (1 - math.sqrt(s / 32 + 1e-4)), 0.999)
    if name == "trunc_cos":
        return 1 - cos_bar(0.0, 0.1) if s == 0 else min(1 - cos_bar(s / 32, 0.1) / cos_bar((s - 1) / 32, 0.1), 0.999)
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_beta_schedules_match_their_formulas(name: str) -> None:
    betas = beta_schedule(name, T)
    assert betas.shape == (T,) and betas.dtype == torch.float64
    for s in (0, 1, 9, 10, 16, 30, 31):
        assert betas[s].item() == pytest.approx(hand_betas(name, s), rel=1e-12, abs=1e-15), s
    assert bool(((betas > 0) & (betas < 1)).all())
    ab = alphas_cumprod(betas)
    assert bool((ab[1:] < ab[:-1]).all()) and 0 < ab[-1] < ab[0] < 1  # noise only grows


def test_beta_schedule_spot_values() -> None:
    # a few numbers by hand: linear/trunc_lin ends, cosine's first step, trunc_cos's first and sqrt's capped end
    assert beta_schedule("linear", T)[-1].item() == pytest.approx(0.625)
    assert beta_schedule("trunc_lin", T)[0].item() == pytest.approx(0.013125)
    assert beta_schedule("trunc_cos", T)[0].item() == pytest.approx(
        1 - math.cos(0.1 / 1.1 * math.pi / 2) ** 2
    )  # 0.020254
    assert beta_schedule("trunc_cos", T)[0].item() == pytest.approx(0.0202535, abs=1e-6)
    assert beta_schedule("sqrt", T)[-1].item() == 0.999  # 1 - ᾱ(1)/ᾱ(31/32) > 0.999: capped
    assert beta_schedule("cosine", T)[-1].item() == 0.999  # ᾱ(1) ≈ 1.5e-5 / ᾱ(31/32): capped
    # trunc_lin with few steps: c·0.02 + 0.01 = 2.51 > 1 for T = 8, so the end is c·1e-3 + 0.01 = 0.135
    assert beta_schedule("trunc_lin", 8)[-1].item() == pytest.approx(0.135)


@pytest.mark.parametrize("name", ["linear", "trunc_lin", "cosine", "trunc_cos"])
def test_increasing_schedules(name: str) -> None:
    betas = beta_schedule(name, T)
    if name == "trunc_cos":  # its first step jumps straight to ᾱ(0) < 1 (the truncation): larger than the second
        assert betas[0] > betas[1]
        betas = betas[1:]
    assert bool((betas[1:] > betas[:-1]).all())


def test_pw_lin_falls_then_rises_and_sqrt_is_u_shaped() -> None:
    b = beta_schedule("pw_lin", T)
    assert bool((b[1:10] < b[:9]).all()) and bool((b[11:] > b[10:-1]).all()) and b[9] == b[10]
    s = beta_schedule("sqrt", T)
    low = int(s.argmin())
    assert 0 < low < T - 1 and bool((s[1 : low + 1] < s[:low]).all()) and bool((s[low + 1 :] > s[low:-1]).all())


def test_bad_schedule_names_and_step_counts_are_user_errors() -> None:
    with pytest.raises(GdrError, match="unknown noise schedule 'cos'") as err:
        beta_schedule("cos", T)
    assert "linear, cosine, sqrt, trunc_cos, trunc_lin, pw_lin" in err.value.fix
    with pytest.raises(GdrError, match="more than 10 diffusion steps"):
        beta_schedule("pw_lin", 8)
    with pytest.raises(GdrError, match="outside") as err:  # linear's last beta is 20/T: 1.0 at T = 20
        beta_schedule("linear", 20)
    assert "at least 21" in err.value.fix


# ----- timestep samplers ------------------------------------------------------------------------


def test_lossaware_is_uniform_until_every_step_has_its_history() -> None:
    smp = LossSecondMomentSampler(3, history=2, uniform_floor=0.1)
    smp.update(torch.tensor([0, 0, 1, 1, 2]), torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0]))
    assert not smp.warm() and torch.equal(smp.probs(), torch.full((3,), 1 / 3, dtype=torch.float64))
    smp.update(torch.tensor([2]), torch.tensor([3.0]))
    assert smp.warm()
    # sqrt(E[L^2]) = 1, 2, 3 -> 1/6, 2/6, 3/6; mixed: 0.9·p + 0.1/3
    expected = [0.9 / 6 + 0.1 / 3, 0.9 * 2 / 6 + 0.1 / 3, 0.9 * 3 / 6 + 0.1 / 3]
    assert smp.probs().tolist() == pytest.approx(expected, rel=1e-12)


def test_lossaware_second_moment_keeps_the_last_losses_in_order() -> None:
    smp = LossSecondMomentSampler(2, history=3, uniform_floor=0.0)
    smp.update(torch.tensor([0, 1, 0]), torch.tensor([1.0, 5.0, 2.0]))
    smp.update(torch.tensor([0, 0, 1, 0, 1, 1]), torch.tensor([3.0, 4.0, 6.0, 7.0, 8.0, 9.0]))
    # step 0 saw 1, 2, 3, 4, 7 -> keeps 3, 4, 7; step 1 saw 5, 6, 8, 9 -> keeps 6, 8, 9
    assert smp.losses.tolist() == [[3.0, 4.0, 7.0], [6.0, 8.0, 9.0]] and smp.counts.tolist() == [3, 3]
    m0, m1 = math.sqrt((9 + 16 + 49) / 3), math.sqrt((36 + 64 + 81) / 3)
    assert smp.probs().tolist() == pytest.approx([m0 / (m0 + m1), m1 / (m0 + m1)], rel=1e-12)


def test_lossaware_update_equals_one_loss_at_a_time() -> None:
    gen = torch.Generator().manual_seed(0)
    smp = LossSecondMomentSampler(5, history=4)
    reference: list[list[float]] = [[] for _ in range(5)]
    for size in (3, 17, 1, 40, 8):
        t = torch.randint(0, 5, (size,), generator=gen)
        loss = torch.rand(size, generator=gen, dtype=torch.float64)
        smp.update(t, loss)
        for step, value in zip(t.tolist(), loss.tolist(), strict=True):
            reference[step] = (reference[step] + [value])[-4:]
        assert smp.counts.tolist() == [len(r) for r in reference]
        assert all(smp.losses[i, : len(r)].tolist() == r for i, r in enumerate(reference))


def test_lossaware_samples_by_its_weights_with_importance_weights() -> None:
    smp = LossSecondMomentSampler(4, history=1, uniform_floor=0.2)
    smp.update(torch.arange(4), torch.tensor([0.0, 1.0, 1.0, 2.0]))
    p = smp.probs()
    assert p.tolist() == pytest.approx([0.05, 0.25, 0.25, 0.45])  # 0.8·[0, .25, .25, .5] + 0.05
    t, w = smp.sample(40_000, torch.Generator().manual_seed(0), torch.device("cpu"))
    freq = torch.bincount(t, minlength=4) / len(t)
    assert freq.tolist() == pytest.approx(p.tolist(), abs=0.01)
    assert torch.allclose(w, (1 / (4 * p[t])).float())  # E[w · f(t)] is the uniform mean of f
    cpu = torch.device("cpu")
    same = [smp.sample(50, torch.Generator().manual_seed(7), cpu)[0] for _ in range(2)]
    assert torch.equal(same[0], same[1])  # draws come from the given generator only


def test_uniform_sampler_and_factory() -> None:
    t, w = UniformSampler(5).sample(1000, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert set(t.tolist()) == set(range(5)) and torch.equal(w, torch.ones(1000))
    with pytest.raises(GdrError, match="unknown timestep sampler 'importance'") as err:
        make_timestep_sampler("importance", 5)
    assert "uniform, lossaware" in err.value.fix


def test_lossaware_state_is_in_the_state_dict() -> None:
    m = Diffurec(n_items=10, max_len=4, d_model=16, n_layers=1, n_heads=2, diffusion_steps=3, sample_steps=3)
    m.timesteps.update(torch.tensor([0, 1, 2]), torch.tensor([1.0, 2.0, 3.0]))
    other = Diffurec(n_items=10, max_len=4, d_model=16, n_layers=1, n_heads=2, diffusion_steps=3, sample_steps=3)
    other.load_state_dict(m.state_dict())
    assert torch.equal(other.timesteps.losses, m.timesteps.losses) and other.timesteps.counts.tolist() == [1, 1, 1]


# ----- respacing ------------------------------------------------------------------------------


def test_respaced_timesteps_and_alphas() -> None:
    assert spaced_timesteps(10, 4) == [0, 3, 6, 9]
    assert spaced_timesteps(32, 5) == [0, 8, 16, 23, 31]  # 7.75 steps apart: 15.5 rounds up to 16
    assert spaced_timesteps(10, 1) == [9] and spaced_timesteps(10, 10) == list(range(10))
    ab = alphas_cumprod(beta_schedule("trunc_lin", 10))
    kept, betas = respace(ab, 4)
    assert kept.tolist() == [0, 3, 6, 9]
    assert betas[0].item() == pytest.approx(1 - ab[0].item()) and betas[2].item() == pytest.approx(
        1 - ab[6].item() / ab[3].item()
    )
    assert torch.allclose(torch.cumprod(1 - betas, 0), ab[kept], rtol=1e-12)
    chain = ReverseChain.of(ab, 4)
    assert chain.c1[0].item() == pytest.approx(1.0) and chain.c2[0].item() == 0 and chain.sigma[0].item() == 0
    assert chain.sigma[3].item() == pytest.approx(math.sqrt(betas[3].item()))
    with pytest.raises(GdrError, match="cannot sample with 11 steps"):
        spaced_timesteps(10, 11)


# ----- the model -------------------------------------------------------------------------------


def tiny(**kw) -> Diffurec:
    base = dict(n_items=30, max_len=6, d_model=16, n_layers=1, n_heads=2, diffusion_steps=8, sample_steps=4, seed=3)
    return Diffurec(**{**base, **kw}).eval()


def test_keyed_noise_depends_on_the_row_only() -> None:
    h = torch.randint(-1, 30, (7, 6))
    keys = row_keys(h, 5)
    z = keyed_normal(keys, 2, (16,))
    assert torch.equal(keyed_normal(row_keys(h[3:4], 5), 2, (16,)), z[3:4])
    assert not torch.equal(keyed_normal(row_keys(h, 6), 2, (16,)), z) and not torch.equal(
        keyed_normal(keys, 3, (16,)), z
    )
    big = keyed_normal(torch.arange(64), 0, (1000,))
    assert abs(big.mean().item()) < 0.02 and abs(big.std().item() - 1) < 0.02


def test_recommendations_do_not_depend_on_the_batch() -> None:
    m = tiny()
    h = torch.randint(-1, 30, (7, 6))
    h[:, -1] = torch.randint(0, 30, (7,))
    items, scores = m.recommend(h, k=10)
    for i in range(7):
        one, s1 = m.recommend(h[i : i + 1], k=10)
        assert torch.equal(one[0], items[i]) and torch.allclose(s1[0], scores[i], atol=1e-5)
    again, _ = m.recommend(h.flip(0), k=10)
    assert torch.equal(again.flip(0), items)
    _, other = m.recommend(h, k=10, options=type("O", (), {"seed": 99})())
    assert not torch.allclose(other, scores, atol=1e-6)  # the seed keys the noise (tiny: it enters scaled by δ)


def test_model_calls_per_user_are_the_reverse_steps() -> None:
    m = tiny()
    h = torch.randint(0, 30, (5, 6))
    m.recommend(h, k=3)
    assert m.sample_stats == {"nfe": 4.0, "function_evals": 20, "rounds": 1}
    m.recommend(h[:2], k=3, options=type("O", (), {"sample_steps": 2})())
    assert m.sample_stats == {"nfe": 2.0, "function_evals": 4, "rounds": 1}


def test_top_k_is_exact_and_exclusion_happens_before_it() -> None:
    m = tiny()
    h = torch.tensor([[-1, -1, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]])
    x0 = m.sample_x0(h, steps=4, seed=3)
    full = m.scores(x0)
    items, scores = m.recommend(h, k=30)
    assert torch.equal(items, full.argsort(dim=1, descending=True)) and torch.allclose(
        scores, full.sort(dim=1, descending=True).values
    )
    exclude = torch.tensor([[*items[0, :5].tolist(), -1], [0, 1, 2, 3, 4, 5]])
    kept, _ = m.recommend(h, k=25, exclude=exclude)
    assert torch.equal(kept[0], items[0, 5:])  # the next 25 in order: K distinct items whatever was removed
    assert len(set(kept[1].tolist())) == 25 and not set(kept[1].tolist()) & set(range(6))
    short, short_scores = m.recommend(h, k=28, exclude=exclude)  # only 25 items are left for each user
    assert short[:, 25:].eq(-1).all() and torch.isinf(short_scores[:, 25:]).all()


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(GdrError, match="sample_steps 9 must be between 1 and diffusion_steps 8"):
        tiny(sample_steps=9)
    with pytest.raises(GdrError, match="multiple of n_heads"):
        tiny(d_model=18, n_heads=4)
    with pytest.raises(GdrError, match="cannot use sampler 'beam'"):
        tiny().recommend(torch.zeros(1, 6, dtype=torch.long), k=3, sampler="beam")
    with pytest.raises(ValueError):
        DiffurecConfig(schedule="cos")


def test_training_draws_are_seeded_and_resume_replays_them() -> None:
    batch = {"history": torch.randint(-1, 30, (8, 6)), "target": torch.randint(0, 30, (8,))}
    a, b = tiny().train(), tiny().train()
    torch.manual_seed(0)
    la = [a.loss(batch).item() for _ in range(3)]
    torch.manual_seed(0)
    assert [b.loss(batch).item() for _ in range(3)] == la
    c = tiny().train()
    c.load_state_dict(a.state_dict())  # carries the step counter: the next draw is the fourth
    torch.manual_seed(1)
    a_next = a.loss(batch).item()
    torch.manual_seed(1)
    assert c.loss(batch).item() == a_next


def test_config_documents_every_field() -> None:
    for cls in (DiffurecConfig, DiffurecTrainConfig):
        for name, field in cls.model_fields.items():
            assert field.description and len(field.description) > 20, name
    assert set(DiffurecConfig.model_fields) - {"train"} <= set(
        Diffurec.__init__.__kwdefaults__
    )  # train: the loop, not the model


# ----- learning ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_splits(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    from stages.preprocess import run

    root = tmp_path_factory.mktemp("syn")
    cfg = PreprocessConfig(synthetic=SyntheticConfig(users=600, items=200, friends=0))
    run(source="synthetic", data_dir=root, config=cfg, name="syn")
    return pl.read_parquet(root / "syn" / "processed" / "splits.parquet")


def test_learns_twice_popularity_on_synthetic_data(synthetic_splits: pl.DataFrame, tmp_path: Path) -> None:
    splits = synthetic_splits
    n_items = int(max(splits["train"].explode().max(), splits["valid"].max(), splits["test"].max())) + 1
    data = FamilyData(splits=splits, n_items=n_items, max_len=20, seed=0)
    cfg = DiffurecConfig(d_model=32, n_layers=1, n_heads=2, diffusion_steps=16, sample_steps=4, emb_dropout=0.1)
    family = DiffurecFamily()
    model = family.build(data, cfg)
    train = family.examples(data, cfg)
    assert set(train) == {"history", "target"} and train["history"].shape[1] == 20
    val = eval_histories(splits, "valid", 20, with_target=True)
    validate = make_validator(val["history"], val["target"], batch_size=512)
    loop = DiffurecTrainConfig(lr=1e-2, batch_size=128, max_epochs=5, max_steps=400, warmup_steps=20, eval_every=100,
                               patience=0, log_every=50)  # fmt: skip
    res = fit(model=model, train=train, validate=validate, cfg=loop, seed=0, workdir=tmp_path)
    pop = Popularity(n_items)
    pop.fit_counts(torch.from_numpy(splits["train"].explode().drop_nulls().to_numpy().astype(np.int64)))
    pop_ndcg = validate(pop, 0, 1)[0] / len(splits)
    assert res.best_metric >= 2 * pop_ndcg, (res.best_metric, pop_ndcg)
    assert int(model.timesteps.counts.min()) == 10  # the loss-aware sampler filled its history during training


def test_safetensors_round_trip_rebuilds_the_model(tmp_path: Path) -> None:
    import json

    from safetensors.torch import load_file, save_file

    m = tiny()
    m.timesteps.update(torch.arange(8), torch.linspace(1, 2, 8))
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    kwargs = json.loads(json.dumps(m.init_kwargs))  # the spec is plain JSON
    back = Diffurec(**kwargs).eval()
    back.load_state_dict(load_file(str(tmp_path / "w.safetensors")), strict=True)
    h = torch.randint(0, 30, (5, 6))
    assert torch.equal(back.recommend(h, k=10)[0], m.recommend(h, k=10)[0])
    assert torch.equal(back.timesteps.losses, m.timesteps.losses)
