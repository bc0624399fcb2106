"""The cheaper-mask dropout (stages/models/fast_dropout.py): rate, scale, gradient, attention, the swap."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stages.models.fast_dropout import attention, dropout, keep_mask, use_fast_dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_in_each_of_the_four_lanes(p: float) -> None:
    """Each int16 lane of a random word (the sign-bearing top one included) keeps 1 - p of its elements."""
    torch.manual_seed(0)
    keep, scale = keep_mask((400_000,), p, torch.device("cpu"))
    assert keep.dtype == torch.bool and keep.shape == (400_000,)
    rates = keep.view(-1, 4).float().mean(0)  # [4]: element i came from lane i % 4
    se = (p * (1 - p) / 100_000) ** 0.5
    assert torch.all((rates - (1 - p)).abs() < 5 * se), rates
    assert scale == pytest.approx(1 / (1 - p), rel=1e-4)


def test_dropout_is_unbiased_and_its_gradient_is_the_mask() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)  # 2,112 elements: not a multiple of 4 words' lanes
    y = dropout(x, 0.3)
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.8
    torch.testing.assert_close(y[kept], x[kept] / 0.7, rtol=1e-4, atol=0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7, rtol=1e-4, atol=0)
    big = dropout(torch.ones(1_000_000), 0.3)
    assert big.mean().item() == pytest.approx(1.0, abs=0.005)  # E[out] = x


def test_dropout_is_identity_in_eval_or_at_zero_and_seeded() -> None:
    x = torch.randn(10, 7)
    assert torch.equal(dropout(x, 0.4, training=False), x)
    assert torch.equal(dropout(x, 0.0), x)
    torch.manual_seed(5)
    a = dropout(x, 0.4)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.4), a)
    assert not torch.equal(dropout(x, 0.4), a)  # the global RNG moved on


def test_attention_matches_sdpa_without_dropout_and_drops_weights_with_it() -> None:
    torch.manual_seed(2)
    q, k, v = torch.randn(3, 2, 5, 8), torch.randn(3, 2, 6, 8), torch.randn(3, 2, 6, 8)
    mask = torch.rand(3, 1, 5, 6) > 0.3
    mask[..., 0] = True  # every query sees a key
    torch.testing.assert_close(attention(q, k, v, mask, 0.0), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    torch.manual_seed(3)
    out = attention(q, k, v, mask, 0.25)
    torch.manual_seed(3)
    keep, scale = keep_mask((3, 2, 5, 6), 0.25, q.device)  # the same draw
    weights = (q @ k.transpose(-2, -1) / 8**0.5).masked_fill(~mask, float("-inf")).softmax(-1)
    torch.testing.assert_close(out, (weights * keep * scale) @ v)


def test_swap_replaces_every_dropout_and_keeps_eval_outputs() -> None:
    torch.manual_seed(4)
    layer = nn.TransformerEncoderLayer(16, 2, 32, 0.2, batch_first=True)
    model = nn.Sequential(nn.Dropout(0.1), layer)
    x = torch.randn(2, 5, 16)
    model.eval()
    before = model(x)
    assert use_fast_dropout(model) == 4  # the outer one and the layer's dropout, dropout1, dropout2
    assert not any(type(m) is nn.Dropout for m in model.modules())
    torch.testing.assert_close(model(x), before)  # eval mode carried over
    ones = torch.ones(3, 8)
    for module, p in ((model[0], 0.1), (layer.dropout1, 0.2)):  # in training: the cheaper mask, the same p
        torch.manual_seed(6)
        dropped = module.train()(ones)
        torch.manual_seed(6)
        keep, scale = keep_mask(ones.shape, p, ones.device)
        assert torch.equal(dropped, keep * scale)
    assert use_fast_dropout(model) == 0
