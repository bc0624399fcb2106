"""RepeatNet's repeat / explore mixture on SASRec and HSTU (`stages/models/seq_repeat.py`), against brute force:
the explore softmax built with an explicit mask over every item, the pointer summed item by item."""

from __future__ import annotations

import math

import pytest
import torch

from gdr_cli.errors import GdrError
from stages.config.seqrec import SasrecConfig
from stages.models.hstu import Hstu
from stages.models.sasrec import Sasrec

MODELS = {"sasrec": Sasrec, "hstu": Hstu}
SEQ = torch.tensor([[-1, -1, 3, 4, 3, 5], [1, 2, 3, 1, 6, 1], [-1, -1, -1, -1, -1, 7]])  # repeats, padding


def tiny(kind: str, explore: str):
    model = MODELS[kind](n_items=9, max_len=5, d_model=8, n_heads=2, n_layers=1, temperature=0.3, dropout=0.0,
                         seed=4, repeat_head=True, repeat_explore=explore).eval()  # fmt: skip
    with torch.no_grad():
        model.repeat.gate.bias.fill_(-0.5)  # neither expert dominates
    return model


def by_hand(model, seq: torch.Tensor, i: int, b: int) -> torch.Tensor:
    """p(item) [N] at position i of row b: explicit masks, loops over the window."""
    hidden = model.encode(seq)[b]  # [L, d]
    h = hidden[i]
    logits = (torch.nn.functional.normalize(h, dim=-1) @ model.item_vectors().T) / model.temperature
    window = [int(x) for x in seq[b, : i + 1] if x >= 0]
    if model.explore_new:
        logits = logits.masked_fill(torch.isin(torch.arange(9), torch.tensor(window)), float("-inf"))
    explore = logits.softmax(-1)
    g = torch.sigmoid(model.repeat.gate(h)).squeeze()
    js = [j for j in range(i + 1) if seq[b, j] >= 0]
    att = torch.stack([(model.repeat.query(h) @ hidden[j]) * model.repeat.scale for j in js]).softmax(0)
    copy = torch.zeros(9)
    for a, j in zip(att, js, strict=True):
        copy[seq[b, j]] += a
    return (1 - g) * explore + g * copy


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("explore", ["all", "new"])
def test_training_loss_is_the_mixtures_nll_at_every_position(kind: str, explore: str) -> None:
    model = tiny(kind, explore)
    got = model.loss({"seq": SEQ})
    want, n = 0.0, 0
    for b in range(3):
        for i in range(5):
            if SEQ[b, i] >= 0 and SEQ[b, i + 1] >= 0:  # a real target after a real item
                want, n = want - math.log(by_hand(model, SEQ[:, :-1], i, b)[SEQ[b, i + 1]].item()), n + 1
    assert n == 8
    assert got.item() == pytest.approx(want / n, rel=1e-4)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("explore", ["all", "new"])
def test_recommendation_ranks_by_the_mixture_and_keeps_k(kind: str, explore: str) -> None:
    model = tiny(kind, explore)
    history = SEQ[:, 1:]
    items, scores = model.recommend(history, k=9)  # the whole catalogue: window items keep their repeat mass
    for b in range(3):
        p = by_hand(model, history, 4, b)
        assert items[b].tolist() == p.argsort(descending=True).tolist()
        torch.testing.assert_close(scores[b].exp(), p.sort(descending=True).values, rtol=1e-4, atol=1e-7)
    kept, _ = model.recommend(history, k=5, exclude=history)
    assert (kept >= 0).all() and not (kept[:, :, None] == history[:, None, :]).any()


def test_repeat_head_needs_the_full_softmax() -> None:
    with pytest.raises(GdrError, match="needs the full softmax"):
        Sasrec(n_items=9, loss="negatives", repeat_head=True)
    with pytest.raises(ValueError, match="does not combine with repeat_head"):
        SasrecConfig(plugin="pdrec", repeat_head=True)
