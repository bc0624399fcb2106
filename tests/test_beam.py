"""The trie of valid codes and the trie-constrained beam search (against brute-force scoring)."""

from __future__ import annotations

import pytest
import torch

from gdr_cli.errors import GdrError
from stages.ids.trie import Trie
from stages.models.tiger import Tiger
from stages.samplers.beam import beam_search

TINY = dict(d_model=16, d_kv=8, d_ff=32, n_heads=2, n_layers=1, n_decoder_layers=2, dropout=0.0)


def unique_codes(n: int, vocab: list[int], seed: int = 0) -> torch.Tensor:
    """n distinct codes [n, D] drawn without replacement from the full code space."""
    space = torch.tensor(vocab).prod().item()
    flat = torch.randperm(space, generator=torch.Generator().manual_seed(seed))[:n]
    digits = []
    for v in reversed(vocab):
        digits.append(flat % v)
        flat = flat // v
    return torch.stack(digits[::-1], dim=1)


@pytest.fixture(scope="module", params=["tokens", "items", "tokens+recency", "items+recency"])
def setup(request: pytest.FixtureRequest) -> tuple[Tiger, torch.Tensor]:
    vocab = [3, 4, 5]
    codes = unique_codes(40, vocab)
    encoder_input, recency = request.param.split("+")[0], 5 * ("+recency" in request.param)  # 5 < the 7 positions
    model = Tiger.from_codes(
        codes, vocab, encoder_input=encoder_input, recency_embedding=recency, seed=1, **TINY
    ).eval()
    gen = torch.Generator().manual_seed(2)
    history = torch.randint(0, 40, (6, 7), generator=gen)
    history[0, :4] = -1  # left padding
    history[1] = -1  # a user with no history
    return model, history


def brute_force(model: Tiger, history: torch.Tensor) -> torch.Tensor:
    """[B, N] log p(code of item | history) for every item."""
    n = model.codes.shape[0]
    return model.token_logprobs(history, torch.arange(n).expand(history.shape[0], n))


# ----- trie ------------------------------------------------------------------------------------
def test_trie_children_leaves_and_dense_equals_sparse() -> None:
    codes = torch.tensor([[0, 1, 2], [0, 1, 0], [2, 0, 1], [0, 2, 2]])
    dense, sparse = Trie(codes, [3, 3, 3]), Trie(codes, [3, 3, 3], dense_limit=0)
    assert dense.n_nodes == [1, 2, 3, 4]
    for d in range(3):
        nodes = torch.arange(dense.n_nodes[d])
        assert torch.equal(dense.children(d, nodes), sparse.children(d, nodes))
    root = dense.children(0, torch.tensor([0]))[0]
    assert (root >= 0).tolist() == [True, False, True]
    # walk every code down the trie and read its item back from the leaf
    node = torch.zeros(4, dtype=torch.int64)
    for d in range(3):
        node = sparse.children(d, node).gather(1, codes[:, d : d + 1]).squeeze(1)
        assert (node >= 0).all()
    assert sparse.items(node).tolist() == [0, 1, 2, 3]
    assert sparse.items(torch.tensor([-1])).tolist() == [-1]


def test_trie_blocks_fully_excluded_subtrees_only() -> None:
    codes = torch.tensor([[0, 0], [0, 1], [1, 0]])
    trie = Trie(codes, [2, 2])
    blocked = trie.blocked(torch.tensor([[0, 1, -1], [0, 0, 2]]))  # row 0 removes prefix 0; row 1 items 0 and 2
    prefix0 = trie.paths[0, 1]
    rows = torch.tensor([0, 1])
    assert trie.is_blocked(blocked[1], 1, rows, prefix0.expand(2)).tolist() == [True, False]
    leaves = trie.paths[:, 2]
    assert trie.is_blocked(blocked[2], 2, torch.ones(3, dtype=torch.int64), leaves).tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (torch.tensor([[0, 1], [0, 1]]), "share their code"),
        (torch.tensor([[0, 3]]), "outside its vocabulary"),
        (torch.tensor([[0, 1, 1]]), "do not match"),
    ],
)
def test_trie_rejects_bad_codes(codes: torch.Tensor, message: str) -> None:
    with pytest.raises(GdrError, match=message):
        Trie(codes, [2, 2])


# ----- beam search -------------------------------------------------------------------------------
def test_exhaustive_beam_equals_brute_force(setup: tuple[Tiger, torch.Tensor]) -> None:
    model, history = setup
    items, scores = beam_search(model, history, k=10, beam=40, trie=model.trie())
    top, best = brute_force(model, history).topk(10, dim=1)
    assert torch.equal(items, best)
    torch.testing.assert_close(scores, top, atol=1e-4, rtol=1e-5)


def test_narrow_beam_gives_k_distinct_items_scored_exactly(setup: tuple[Tiger, torch.Tensor]) -> None:
    model, history = setup
    items, scores = model.recommend(history, k=10, options=type("O", (), {"beam": 12})())
    assert items.shape == (6, 10) and (items >= 0).all() and (items < 40).all()
    assert all(len(set(row)) == 10 for row in items.tolist())
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    torch.testing.assert_close(scores, brute_force(model, history).gather(1, items), atol=1e-4, rtol=1e-5)


def test_cached_and_uncached_decoding_agree(setup: tuple[Tiger, torch.Tensor]) -> None:
    model, history = setup
    cached = beam_search(model, history, k=10, beam=15, trie=model.trie())
    plain = beam_search(model, history, k=10, beam=15, trie=model.trie(), use_cache=False)
    assert torch.equal(cached[0], plain[0])
    torch.testing.assert_close(cached[1], plain[1], atol=1e-5, rtol=1e-5)


def test_deterministic_and_batch_independent(setup: tuple[Tiger, torch.Tensor]) -> None:
    model, history = setup
    a = model.recommend(history, k=10)
    b = model.recommend(history, k=10)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    alone = model.recommend(history[2:3], k=10)  # a user's list does not depend on its batch mates
    assert torch.equal(alone[0], a[0][2:3])


def test_exclude_removes_items_and_keeps_k(setup: tuple[Tiger, torch.Tensor]) -> None:
    model, history = setup
    items, scores = beam_search(model, history, k=10, beam=40, trie=model.trie(), exclude=history)
    full = brute_force(model, history)
    banned = torch.zeros_like(full, dtype=torch.bool)
    banned.scatter_(1, history.clamp(min=0), history >= 0)
    top, best = full.masked_fill(banned, float("-inf")).topk(10, dim=1)
    assert torch.equal(items, best)
    torch.testing.assert_close(scores, top, atol=1e-4, rtol=1e-5)
    # a narrow beam still returns k items when the history covers whole subtrees
    everything_but = torch.arange(40).expand(6, 40).clone()
    everything_but[:, :12] = -1
    items, _ = beam_search(model, history, k=10, beam=10, trie=model.trie(), exclude=everything_but)
    assert ((items >= 0) & (items < 12)).all()
    assert all(len(set(row)) == 10 for row in items.tolist())


def test_small_catalogue_pads_and_narrow_beam_is_an_error() -> None:
    vocab = [2, 2]
    model = Tiger.from_codes(unique_codes(3, vocab), vocab, **TINY).eval()
    items, scores = model.recommend(torch.tensor([[0, 1], [-1, 2]]), k=5, options=type("O", (), {"beam": 5})())
    assert (items[:, :3] >= 0).all() and (items[:, 3:] == -1).all()
    assert torch.isinf(scores[:, 3:]).all() and torch.isfinite(scores[:, :3]).all()
    with pytest.raises(GdrError, match="smaller than k"):
        beam_search(model, torch.tensor([[0]]), k=5, beam=4, trie=model.trie())


@pytest.mark.parametrize("feed_forward", ["relu", "gated-gelu"])
def test_cached_decoder_equals_transformers_decoder_per_step(feed_forward: str) -> None:
    vocab = [3, 4, 5]
    codes = unique_codes(40, vocab, seed=3)
    model = Tiger.from_codes(codes, vocab, feed_forward=feed_forward, seed=4, **TINY).eval()
    history = torch.randint(0, 40, (3, 5), generator=torch.Generator().manual_seed(5))
    history[0, :3] = -1  # left padding: masked encoder positions
    hidden, mask = model.encode(history)
    cache = model.start_decoding(hidden, mask)
    assert model.t5.lm_head.weight.shape[0] % 8 and cache.head.shape[0] % 8 == 0  # the padded output layer is exercised
    gen = torch.Generator().manual_seed(6)
    prefix = torch.zeros(3, 1, 1, dtype=torch.int64)  # [B, W, t] decoder inputs, one beam per user at first
    for d in range(len(vocab)):
        w = prefix.shape[1]
        ours = model.next_logprobs(prefix[:, :, -1], cache)  # [B, W, V]
        rows = torch.arange(3).repeat_interleave(w)
        ref = model.decode_step(prefix.flatten(0, 1), hidden[rows], mask[rows]).view(3, w, -1)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        parent = torch.randint(0, w, (3, 4), generator=gen)  # widen to 4 beams, some parents repeated
        new = torch.randint(0, vocab[d], (3, 4), generator=gen) + model.offsets[d]
        prefix = torch.cat([prefix[torch.arange(3)[:, None], parent], new[..., None]], 2)
        cache.reorder(parent)


@pytest.mark.parametrize("feed_forward", ["relu", "gated-gelu"])
def test_lean_decoding_without_autograd_equals_transformers(feed_forward: str) -> None:
    # beam search runs without autograd: the hand-run encoder (`t5_lean.encoder`), the in-place
    # log-softmax and the position-major cache reorder; each step against the transformers decoder
    vocab = [3, 4, 5]
    codes = unique_codes(40, vocab, seed=3)
    model = Tiger.from_codes(codes, vocab, feed_forward=feed_forward, seed=4, **TINY).eval()
    history = torch.randint(0, 40, (3, 5), generator=torch.Generator().manual_seed(5))
    history[0, :3] = -1  # left padding: masked encoder positions
    with torch.no_grad():
        embed, mask = model.encoder_inputs(history)
        ref_hidden = model.t5.encoder(inputs_embeds=embed, attention_mask=mask).last_hidden_state
        hidden, mask = model.encode(history)
        torch.testing.assert_close(hidden, ref_hidden, atol=1e-6, rtol=1e-6)
        cache = model.start_decoding(hidden, mask)
        gen = torch.Generator().manual_seed(6)
        prefix = torch.zeros(3, 1, 1, dtype=torch.int64)
        for d in range(len(vocab)):
            w = prefix.shape[1]
            span = (int(model.offsets[d]), int(model.offsets[d]) + vocab[d])
            ours = model.next_logprobs(prefix[:, :, -1], cache, span)  # [B, W, V_d]
            rows = torch.arange(3).repeat_interleave(w)
            ref = model.decode_step(prefix.flatten(0, 1), ref_hidden[rows], mask[rows]).view(3, w, -1)
            torch.testing.assert_close(ours, ref[..., span[0] : span[1]], atol=1e-5, rtol=1e-5)
            parent = torch.randint(0, w, (3, 4), generator=gen)  # widen to 4 beams, then reorder at width 4
            new = torch.randint(0, vocab[d], (3, 4), generator=gen) + model.offsets[d]
            prefix = torch.cat([prefix[torch.arange(3)[:, None], parent], new[..., None]], 2)
            cache.reorder(parent)


def test_trie_bool_table_and_single_child_lookup_equal_children() -> None:
    vocab = [4, 5, 3]
    codes = unique_codes(30, vocab, seed=7)
    for limit in (1 << 22, 0):  # dense tables, then the sorted-key search only
        trie = Trie(codes, vocab, dense_limit=limit)
        nodes = torch.zeros(1, dtype=torch.int64)
        for d in range(len(vocab)):
            child = trie.children(d, nodes)  # [M, V_d]
            assert torch.equal(trie.no_child(d, nodes), child < 0)
            digits = torch.arange(vocab[d]).expand_as(child)
            assert torch.equal(trie.child(d, nodes[:, None].expand_as(child), digits), child)
            nodes = child[child >= 0]
