"""The repeat expert (RepeatNet) of the generative models: its losses and the diffusion model's item-level
mixture, checked against hand computation (tiger's in-beam mixture is checked in test_tiger.py)."""

from __future__ import annotations

import math

import pytest
import torch

from gdr_cli.errors import GdrError
from stages.models.repeat_head import NEG, mix_lists, mode_nll
from stages.samplers.base import top_distinct
from tests.test_diffusion_core import tiny_model


def test_mode_nll_by_hand() -> None:
    log_e, log_r = torch.tensor([math.log(0.7), math.log(0.4)]), torch.tensor([math.log(0.3), math.log(0.6)])
    log_a = (
        torch.tensor([[0.5, 0.25, 0.25], [0.9, 0.1, 1.0]])
        .log()
        .masked_fill(torch.tensor([[0, 0, 0], [0, 0, 1]]).bool(), NEG)
    )
    history = torch.tensor([[4, 9, 4], [2, 5, -1]])
    got = mode_nll(log_e, log_r, log_a, history, torch.tensor([4, 7]))
    # user 0 repeats item 4 (held at positions 0 and 2: 0.75 of the pointer), user 1 explores
    torch.testing.assert_close(got, torch.tensor([-math.log(0.3 * 0.75), -math.log(0.4)]))


def test_mix_lists_by_hand() -> None:
    items, scores = torch.tensor([[5, 2, -1]]), torch.tensor([[math.log(0.5), math.log(0.2), float("-inf")]])
    history = torch.tensor([[2, 7, 7, 3]])
    log_a = torch.tensor([[0.1, 0.3, 0.2, 0.4]]).log()
    heads = (torch.tensor([math.log(0.8)]), torch.tensor([math.log(0.2)]), log_a)
    allowed = torch.tensor([[True, True, True, False]])  # item 3 is excluded
    cand, mix = mix_lists(items, scores, history, heads, allowed)
    assert cand.tolist() == [[5, 2, -1, 2, 7, 7, -1]]
    want = [0.8 * 0.5, 0.8 * 0.2 + 0.2 * 0.1, 0.0, 0.8 * 0.2 + 0.2 * 0.1, 0.2 * 0.5, 0.2 * 0.5, 0.0]
    torch.testing.assert_close(mix.exp(), torch.tensor([want]))
    top, top_score = top_distinct(cand, mix, 3)
    assert top.tolist() == [[5, 2, 7]]
    torch.testing.assert_close(top_score.exp(), torch.tensor([[0.4, 0.18, 0.1]]))


def test_diffusion_repeat_loss_adds_the_mode_nll() -> None:
    model = tiny_model(repeat_head=True)
    batch = {"history": torch.tensor([[0, 3, 3, 5], [-1, -1, 1, 2]]), "target": torch.tensor([3, 9])}
    with torch.no_grad():
        total = model.loss(batch)  # eval mode: the same masks every call
        memory, _ = model._memory(batch["history"])
        heads = model.repeat(memory[:, -1], memory[:, :-1], batch["history"] >= 0)
        repeat, model.repeat = model.repeat, None
        base = model.loss(batch)
    model.repeat = repeat
    g = heads[1].exp()
    a = heads[2].exp()
    want = (-torch.log(g[0] * (a[0, 1] + a[0, 2])) - torch.log(1 - g[1])) / 2
    assert total.item() == pytest.approx(base.item() + want.item(), rel=1e-5)


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("explore", ["all", "new"])
def test_diffusion_repeat_mixes_the_samplers_list_with_the_history(exclude: bool, explore: str) -> None:
    model = tiny_model(repeat_head=True, repeat_explore=explore)
    with torch.no_grad():
        model.repeat.gate.bias.fill_(2.0)  # mostly repeat: history items must climb the list
    history = torch.tensor([[0, 3, 3, 5], [-1, -1, 1, 2], [-1, -1, -1, -1]])
    items, scores = model.recommend(history, k=4, sampler="cpd", exclude=history if exclude else None)
    # by hand: the same model's list without the head ('new': searched without the history), then
    # p = (1 - g) p_list + g * pointer mass, per item
    repeat, model.repeat = model.repeat, None
    base, base_score = model.recommend(
        history, k=4, sampler="cpd", exclude=history if exclude or explore == "new" else None
    )
    model.repeat = repeat
    with torch.no_grad():
        memory, _ = model._memory(history)
        log_e, log_r, log_a = model.repeat(memory[:, -1], memory[:, :-1], history >= 0)
    for u in range(3):
        p: dict[int, float] = {}
        for item, s in zip(base[u].tolist(), base_score[u].tolist(), strict=True):
            p[item] = p.get(item, 0.0) + math.exp(log_e[u].item() + s)
        for j, item in enumerate(history[u].tolist()):
            if item >= 0 and not exclude:
                p[item] = p.get(item, 0.0) + math.exp(log_r[u].item() + log_a[u, j].item())
        want = sorted(p.items(), key=lambda kv: -kv[1])[:4]
        assert items[u].tolist() == [i for i, _ in want]
        torch.testing.assert_close(scores[u].exp(), torch.tensor([v for _, v in want]), rtol=1e-4, atol=1e-7)
    assert all(len(set(row)) == 4 for row in items.tolist())
    if exclude:
        assert not (items[:, :, None] == history[:, None, :]).any()
    else:
        assert 3 in items[0, :2].tolist()  # the twice-seen item is near the top


@pytest.mark.parametrize("sampler", ["cpd", "tweedie", "euler", "ordered", "ordered-beam"])
@pytest.mark.parametrize("exclude", [False, True])
def test_every_sampler_with_the_repeat_head_returns_k_distinct_allowed_items(sampler: str, exclude: bool) -> None:
    model = tiny_model(repeat_head=True)
    with torch.no_grad():
        model.repeat.gate.bias.fill_(3.0)
    history = torch.tensor([[0, 3, 3, 5], [-1, -1, 1, 2], [-1, -1, -1, -1]])
    banned = history if exclude else None
    options = {"beam": 6, "steps": 3}
    items, scores = model.recommend(history, k=6, sampler=sampler, options=options, exclude=banned)
    assert (items >= 0).all() and all(len(set(row)) == 6 for row in items.tolist())  # 12 items, <= 3 banned
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # sorted by the mixture's log-prob
    if exclude:
        assert not (items[:, :, None] == history[:, None, :]).any()
    again, _ = model.recommend(history, k=6, sampler=sampler, options=options, exclude=banned)
    assert torch.equal(items, again)


def test_diffusion_explore_new_learns_the_generator_from_the_explore_examples_only() -> None:
    model = tiny_model(repeat_head=True, repeat_explore="new")
    batch = {"history": torch.tensor([[0, 3, 3, 5], [-1, -1, 1, 2]]), "target": torch.tensor([3, 9])}
    with torch.no_grad():
        total = model.loss(batch)  # eval mode: the same masks every call
        memory, _ = model._memory(batch["history"])
        heads = model.repeat(memory[:, -1], memory[:, :-1], batch["history"] >= 0)
        repeat, model.repeat, model.explore_new = model.repeat, None, False
        explore_only = model.loss({"history": batch["history"][1:], "target": batch["target"][1:]})
    model.repeat = repeat
    # the generator's term averaged over the batch (user 0 repeats: none), the mode loss of both users
    want = explore_only / 2 + mode_nll(*heads, batch["history"], batch["target"]).mean()
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    with pytest.raises(GdrError, match="needs a repeat head"):
        tiny_model(repeat_explore="new")
