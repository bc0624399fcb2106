"""The TIGER model: token layout, loss, seeded init, checkpoints and pretrained init."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from gdr_cli.errors import GdrError
from stages.models.registry import SPEC, WEIGHTS, load_model, save_model
from stages.models.tiger import PAD, TIED, Tiger, drop_history

TINY = dict(d_model=16, d_kv=8, d_ff=32, n_heads=2, n_layers=1, n_decoder_layers=1, dropout=0.0, label_smoothing=0.0)
VOCAB = [3, 4]
CODES = torch.tensor([[i // 4, i % 4] for i in range(12)])  # 12 items, every code distinct


def tiny(**kw: object) -> Tiger:
    return Tiger.from_codes(CODES, VOCAB, **{**TINY, **kw})


def test_token_layout_and_encoder_inputs() -> None:
    model = tiny()
    assert model.vocab_size == 2 + 3 + 4
    tokens = model.item_tokens(torch.tensor([[5, -1]]))  # item 5 = code (1, 1)
    assert tokens.tolist() == [[[2 + 1, 2 + 3 + 1], [PAD, PAD]]]
    embed, mask = model.encoder_inputs(torch.tensor([[-1, -1, 5], [-1, -1, -1]]))
    assert embed.shape == (2, 6, 16)
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1]]  # an empty history attends to one pad
    embed, mask = tiny(encoder_input="items").encoder_inputs(torch.tensor([[-1, 5]]))
    assert embed.shape == (1, 2, 16) and mask.tolist() == [[0, 1]]


def test_item_embedding_joins_the_token_sum() -> None:
    model = tiny(encoder_input="items", item_embedding=True, seed=2)
    embed, _ = model.encoder_inputs(torch.tensor([[7, 5]]))
    tokens = model.t5.shared(model.item_tokens(torch.tensor([5])))[0]  # [D, d] item 5's token embeddings
    want = (tokens.sum(0) + model.item_embed.weight[5]) / 3**0.5  # D = 2 tokens + the item's own vector
    assert torch.allclose(embed[0, 1], want)
    # per-token input: the item's vector is added to each of its D positions
    tok = tiny(encoder_input="tokens", item_embedding=True, seed=2)
    embed, _ = tok.encoder_inputs(torch.tensor([[5]]))
    want = (tok.t5.shared(tok.item_tokens(torch.tensor([5])))[0] + tok.item_embed.weight[5]) * 0.5**0.5
    assert torch.allclose(embed[0], want)
    assert tiny().item_embed is None and "item_embed.weight" not in tiny().state_dict()


def test_recency_embedding_marks_the_latest_items() -> None:
    """Row 0 of the table goes to the last (latest) position, older items than the table get nothing."""
    model = tiny(encoder_input="items", recency_embedding=2, seed=3)
    history = torch.tensor([[-1, 7, 4, 5]])  # left-padded: 5 is the latest item, 7 the oldest
    embed, _ = model.encoder_inputs(history)
    plain = tiny(encoder_input="items", seed=3).encoder_inputs(history)[0]  # same seed: same token table
    table = model.recency.weight
    torch.testing.assert_close(embed - plain, torch.stack([0 * table[0], 0 * table[0], table[1], table[0]])[None])
    tok = tiny(encoder_input="tokens", recency_embedding=2, seed=3)
    embed, _ = tok.encoder_inputs(history)  # [1, 4 * D, d]: the item's vector on each of its D positions
    diff = embed - tiny(encoder_input="tokens", seed=3).encoder_inputs(history)[0]
    torch.testing.assert_close(diff[0, -2:], tok.recency.weight[0].expand(2, -1))
    torch.testing.assert_close(diff[0, -4:-2], tok.recency.weight[1].expand(2, -1))
    assert diff[0, :-4].abs().sum() == 0
    assert tiny().recency is None and "recency_embedding" not in tiny().init_kwargs  # off: old specs unchanged


def test_history_dropout_pads_items_but_the_latest_in_training_only() -> None:
    torch.manual_seed(0)
    history = torch.arange(4000).view(200, 20)
    dropped = drop_history(history, 0.3)
    kept = dropped >= 0
    assert kept[:, -1].all() and (dropped[kept] == history[kept]).all()  # the latest stays, the rest untouched
    assert abs((~kept[:, :-1]).float().mean().item() - 0.3) < 0.02  # 3,800 draws: within ~4.5 sigma
    torch.manual_seed(0)
    assert torch.equal(drop_history(history, 0.3), dropped)  # the global RNG, as dropout: seeded runs repeat
    batch = {"history": torch.tensor([[3, 5, 6], [-1, 7, 2]]), "target": torch.tensor([1, 10])}
    model, plain = tiny(seed=4, history_dropout=0.5), tiny(seed=4)
    assert model.init_kwargs["history_dropout"] == 0.5 and "history_dropout" not in plain.init_kwargs
    model.eval(), plain.eval()
    torch.testing.assert_close(model.loss(batch), plain.loss(batch))  # evaluation reads the whole history
    model.train(), plain.train()
    torch.manual_seed(1)
    losses = {round(model.loss(batch).item(), 6) for _ in range(8)}
    assert len(losses) > 1  # training sees a fresh subset of the history each step


def test_label_smoothing_loss_by_hand() -> None:
    plain, smooth = tiny(seed=4, label_smoothing=0.0), tiny(seed=4, label_smoothing=0.2)
    batch = {"history": torch.tensor([[3, 5], [-1, 7]]), "target": torch.tensor([1, 10])}
    hidden, mask = plain.encode(batch["history"])
    labels = plain.item_tokens(batch["target"])
    dec_in = torch.nn.functional.pad(labels[:, :-1], (1, 0), value=PAD)
    out = plain.t5.decoder(input_ids=dec_in, encoder_hidden_states=hidden, encoder_attention_mask=mask)
    logp = plain.logits(out.last_hidden_state).float().log_softmax(-1)  # [2, D, V]
    nll = -logp.gather(-1, labels[..., None]).mean()
    uniform = -logp.mean()  # cross-entropy against the uniform distribution over V
    plain.eval(), smooth.eval()
    assert plain.loss(batch).item() == pytest.approx(nll.item(), rel=1e-5)
    assert smooth.loss(batch).item() == pytest.approx((0.8 * nll + 0.2 * uniform).item(), rel=1e-5)


@pytest.mark.parametrize("encoder_input", ["tokens", "items"])
def test_loss_decreases(encoder_input: str) -> None:
    model = tiny(encoder_input=encoder_input, seed=3).train()
    gen = torch.Generator().manual_seed(0)
    history = torch.randint(-1, 12, (32, 5), generator=gen)
    batch = {"history": history, "target": (history[:, -1].clamp(min=0) + 1) % 12}  # next = last + 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_dense_head_loss_by_hand() -> None:
    plain, dense = tiny(seed=4).eval(), tiny(seed=4, dense_weight=0.5).eval()
    assert "dense_weight" not in plain.init_kwargs and plain.dense is None  # off: old specs unchanged
    batch = {"history": torch.tensor([[3, 5], [-1, 7]]), "target": torch.tensor([1, 10])}
    hidden, _ = dense.encode(batch["history"])
    keys = dense.t5.shared(dense.item_tokens(torch.arange(12))).sum(1) / 2**0.5  # [N, d], D = 2 digits
    logits = dense.dense.query(hidden[:, -1]) @ keys.T / 16**0.5  # [B, N]
    ce = torch.nn.functional.cross_entropy(logits, batch["target"])
    assert dense.loss(batch).item() == pytest.approx(plain.loss(batch).item() + 0.5 * ce.item(), rel=1e-5)


def test_dense_logprobs_are_the_full_softmax_in_any_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    import stages.models.dense_head as dense_head

    model = tiny(seed=6, dense_weight=1.0).eval()
    latest = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    items = torch.tensor([[0, 11, -1], [5, 5, 2], [7, 3, 9]])
    full = model.dense.logits(latest, model.item_vectors(torch.arange(12))).log_softmax(-1)  # [3, 12]
    want = torch.where(items >= 0, full.gather(1, items.clamp(min=0)), float("-inf"))
    monkeypatch.setattr(dense_head, "ITEM_CHUNK", 5)  # 12 items in blocks of 5, 5, 2
    got = model.dense.logprobs(latest, model.item_vectors, 12, items)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("exclude", [False, True])
def test_dense_reranks_the_beams_candidates_by_both_log_probs(exclude: bool) -> None:
    model = tiny(seed=7, dense_weight=1.0).eval()
    history = torch.tensor([[0, 1, 2], [-1, 4, 9], [-1, -1, 3]])
    banned = history if exclude else None
    items, scores = model.recommend(history, k=4, options=SimpleNamespace(beam=8), exclude=banned)
    assert items.shape == (3, 4) and all(len(set(row)) == 4 for row in items.tolist())
    # brute force: every allowed item scored by its code log-prob + its dense log-prob; the beam keeps the top 8
    # by code log-prob, the top 4 of those by the sum come back
    everything = torch.arange(12).expand(3, -1)
    gen = model.token_logprobs(history, everything)  # [3, 12]
    hidden, _ = model.encode(history)
    total = gen + model.dense.logits(hidden[:, -1], model.item_vectors(torch.arange(12))).log_softmax(-1)
    if exclude:  # the history's items (not the padding) are never candidates
        banned_mask = torch.zeros(3, 13, dtype=torch.bool).scatter(1, history.where(history >= 0, 12), True)[:, :12]
        gen = gen.masked_fill(banned_mask, float("-inf"))
    pool = gen.topk(8, dim=1).indices  # [3, 8] the beam's candidates (exact for this 2-digit trie and beam 8)
    picked = total.gather(1, pool)
    want = pool.gather(1, picked.topk(4, dim=1).indices)
    assert items.tolist() == want.tolist()
    torch.testing.assert_close(scores, picked.topk(4, dim=1).values)


def test_dense_head_with_corruption_training_is_an_error() -> None:
    with pytest.raises(GdrError, match="dense_weight does not combine"):
        tiny(dense_weight=1.0, corruption={})


def repeat_by_hand(model: Tiger, history: torch.Tensor, new: bool = False) -> torch.Tensor:
    """log p(item) [B, 12] of the repeat / explore mixture, from the model's parts; new: the generator's mass
    covers items outside the history only (`repeat_explore: new`)."""
    hidden, _ = model.encode(history)
    latest, states = model.history_states(hidden, history.shape[1])
    some = (history >= 0).any(1)  # [B] an empty history repeats nothing: g = 0
    g = torch.sigmoid(model.repeat.gate(latest)).squeeze(-1) * some  # [B]
    score = (states @ model.repeat.query(latest)[:, :, None]).squeeze(-1) / 16**0.5
    a = score.masked_fill(history < 0, float("-inf")).softmax(-1).nan_to_num()  # [B, L]
    copy = torch.zeros(history.shape[0], 12).scatter_add(1, history.clamp(min=0), a * (history >= 0))
    gen = model.token_logprobs(history, torch.arange(12).expand(history.shape[0], -1)).exp()
    if new:
        gen = gen * (torch.zeros_like(gen).scatter_add(1, history.clamp(min=0), (history >= 0).float()) == 0)
    return ((1 - g)[:, None] * gen + g[:, None] * copy).log()


@pytest.mark.parametrize(("encoder_input", "explore"), [("tokens", "all"), ("items", "all"), ("items", "new")])
def test_repeat_head_loss_is_the_mixtures_nll(encoder_input: str, explore: str) -> None:
    model = tiny(seed=8, repeat_head=True, encoder_input=encoder_input, repeat_explore=explore).eval()
    batch = {"history": torch.tensor([[3, 5, 3], [-1, 7, 2], [-1, -1, 4]]), "target": torch.tensor([3, 10, 4])}
    mix = repeat_by_hand(model, batch["history"], new=explore == "new")
    want = -mix.gather(1, batch["target"][:, None]).mean() / 2  # D = 2
    assert model.loss(batch).item() == pytest.approx(want.item(), rel=1e-5)


def test_repeat_explore_new_needs_the_repeat_head() -> None:
    with pytest.raises(GdrError, match="needs a repeat head"):
        tiny(repeat_explore="new")


@pytest.mark.parametrize(("exclude", "explore"), [(False, "all"), (True, "all"), (False, "new"), (True, "new")])
def test_repeat_head_beam_ranks_by_the_mixture(exclude: bool, explore: str) -> None:
    model = tiny(seed=9, repeat_head=True, repeat_explore=explore).eval()
    with torch.no_grad():
        model.repeat.gate.bias.fill_(1.0)  # repeat often: history items must climb the list
    history = torch.tensor([[0, 1, 1], [-1, 4, 9], [-1, -1, -1]])  # the last user has nothing to repeat
    banned = history if exclude else None
    # beam 12 keeps every prefix of this 12-item, 2-digit catalogue: the search is exact
    items, scores = model.recommend(history, k=5, options=SimpleNamespace(beam=12), exclude=banned)
    want = repeat_by_hand(model, history, new=explore == "new")
    if exclude:
        banned_mask = torch.zeros(3, 13, dtype=torch.bool).scatter(1, history.where(history >= 0, 12), True)[:, :12]
        want = want.masked_fill(banned_mask, float("-inf"))
    top = want.topk(5, dim=1)
    assert items.tolist() == top.indices.tolist()
    torch.testing.assert_close(scores, top.values, rtol=1e-4, atol=1e-5)
    if not exclude:
        assert 1 in items[0, :2].tolist()  # the twice-seen item is among the first two


def test_repeat_head_with_label_smoothing_by_hand() -> None:
    plain, smooth = tiny(seed=8, repeat_head=True).eval(), tiny(seed=8, repeat_head=True, label_smoothing=0.2).eval()
    batch = {"history": torch.tensor([[3, 5, 3], [-1, 7, 2]]), "target": torch.tensor([3, 10])}
    hidden, mask = plain.encode(batch["history"])
    labels = plain.item_tokens(batch["target"])
    dec_in = torch.nn.functional.pad(labels[:, :-1], (1, 0), value=PAD)
    out = plain.t5.decoder(input_ids=dec_in, encoder_hidden_states=hidden, encoder_attention_mask=mask)
    uniform = -plain.logits(out.last_hidden_state).float().log_softmax(-1).mean()
    want = 0.8 * plain.loss(batch) + 0.2 * uniform
    assert smooth.loss(batch).item() == pytest.approx(want.item(), rel=1e-5)


def test_seeded_init_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, c = tiny(seed=7), tiny(seed=7), tiny(seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.t5.shared.weight, c.t5.shared.weight)


@pytest.mark.parametrize(("recency", "dense", "repeat"), [(0, 0.0, False), (3, 0.0, False), (0, 1.0, True)])
def test_checkpoint_round_trip_rebuilds_codes_and_scores(
    tmp_path: Path, recency: int, dense: float, repeat: bool
) -> None:
    model = tiny(seed=5, recency_embedding=recency, dense_weight=dense, repeat_head=repeat).eval()
    save_model(tmp_path, model, meta={"max_len": 5})
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / WEIGHTS)))
    assert "codes" in keys and not keys & set(TIED)  # code table persisted, tied copies not duplicated
    loaded, meta = load_model(tmp_path)
    assert meta == {"max_len": 5} and torch.equal(loaded.codes, CODES)
    history = torch.tensor([[0, 1, 2], [-1, -1, 7]])
    assert torch.equal(loaded.recommend(history, k=5)[0], model.recommend(history, k=5)[0])


def test_checkpoint_with_other_code_shape_is_an_error(tmp_path: Path) -> None:
    save_model(tmp_path, tiny())
    spec = json.loads((tmp_path / SPEC).read_text())
    spec["init_kwargs"]["n_items"] = 20  # the ID set now has 20 items: the stored code table no longer fits
    (tmp_path / SPEC).write_text(json.dumps(spec))
    with pytest.raises(GdrError, match="does not fit its model"):
        load_model(tmp_path)
    with pytest.raises(GdrError, match="does not match the model"):
        tiny().check_codes(torch.zeros(12, 3, dtype=torch.int64))
    with pytest.raises(GdrError, match="outside the model's vocabulary"):
        tiny().check_codes(CODES + 3)


def test_corrupted_checkpoint_is_an_error(tmp_path: Path) -> None:
    save_model(tmp_path, tiny())
    data = (tmp_path / WEIGHTS).read_bytes()
    (tmp_path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(GdrError, match="corrupted checkpoint"):
        load_model(tmp_path)


def test_init_from_a_local_t5_checkpoint(tmp_path: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=6, d_model=24, d_kv=4, d_ff=40, num_layers=1, num_decoder_layers=1, num_heads=3,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=False)  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
        hf = T5ForConditionalGeneration.from_pretrained(tmp_path / "t5")
    model = Tiger.from_codes(CODES, VOCAB, init=tmp_path / "t5", dropout=0.0)
    assert model.init_kwargs["d_model"] == 24 and model.init_kwargs["feed_forward"] == "gated-gelu"
    assert model.init_kwargs["scale_outputs"] is False
    assert model.t5.shared.weight.shape == (model.vocab_size, 24)  # 6 rows resized to the code vocabulary
    assert torch.equal(model.t5.shared.weight[:6], hf.shared.weight)
    wo = "encoder.block.0.layer.1.DenseReluDense.wo.weight"
    assert torch.equal(model.t5.state_dict()[wo], hf.state_dict()[wo])
    assert model.loss({"history": torch.tensor([[0, 1]]), "target": torch.tensor([2])}).isfinite()


@pytest.mark.parametrize("content", [None, "{}", '{"model_type": "bert"}'])
def test_unusable_init_folder_is_an_error(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(content)
    with pytest.raises(GdrError, match="T5"):
        Tiger.from_codes(CODES, VOCAB, init=tmp_path, **TINY)
