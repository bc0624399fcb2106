"""IDGenRec in gdr: textual IDs (`gdr train-gen`), the textual-ID tiger and `gdr train --view item|social|both`.

Units by hand: the tokenizer learned offline (no socket is opened), TF-IDF keyword targets, the clash
resolution; the soft-ID bridge sends the recommender's gradient into the generator in the ID round
and none in the recommender round. End to end on tiny synthetic data: every view, unique IDs of the
textual kind, any round sampled and evaluated, resume after a kill mid-round ending in the same
weights as an uninterrupted run, and bad input (no friend graph, a generator of another dataset).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from gdr_cli.app import main
from stages.idgen.generator import IdGenerator
from stages.idgen.joint import round_model
from stages.idgen.texts import keyword_targets
from stages.idgen.tokenizer import EMPTY, PAD, SPECIALS, UNK, encode_texts, train_tokenizer, words
from stages.idgen.unique import assign_unique
from stages.ids.codeset import CodeSet
from stages.models.tiger import Tiger

SYN = ["--set", "synthetic.users=120", "--set", "synthetic.items=50", "--set", "synthetic.clusters=5",
       "--set", "synthetic.friends=8", "--set", "synthetic.homophily=0.9"]  # fmt: skip


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ----- units -------------------------------------------------------------------------------------------
def test_tokenizer_is_learned_offline_from_the_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the tokenizer must not open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    texts = ["The Beatles", "beatles, THE!", "AC/DC rock", "rock rock pop", "solo"]
    tok = train_tokenizer(texts, vocab_size=100, min_frequency=2)
    # counts: rock 3, beatles 2, the 2; ac dc pop solo 1 (< min_frequency) -> dropped
    assert words(tok) == [*SPECIALS, "rock", "beatles", "the"]
    ids = encode_texts(tok, ["the Beatles rock", "", "solo", "Rock!!"], 4)
    assert ids.tolist() == [[5, 4, 3, PAD], [EMPTY, PAD, PAD, PAD], [UNK, PAD, PAD, PAD], [3, PAD, PAD, PAD]]
    assert encode_texts(tok, ["rock the beatles rock"], 2).tolist() == [[3, 5]]  # cut to max_len
    capped = train_tokenizer(texts, vocab_size=len(SPECIALS) + 1, min_frequency=1)
    assert words(capped) == [*SPECIALS, "rock"]  # the most frequent word only


def test_keyword_targets_by_hand() -> None:
    # 4 texts; document frequency: w3 1, w4 2, w5 1, w6 1 -> idf log(4/df)
    text = torch.tensor([[3, 4, 3, 0], [4, 5, 0, 0], [EMPTY, 0, 0, 0], [6, UNK, 0, 0]])
    targets, has = keyword_targets(text, 3)
    # row 0: w3 tf 2 (2 log 4) > w4 (log 2); cycled. row 1: w5 (log 4) > w4. row 3: w6 only (UNK is no word)
    assert targets.tolist() == [[3, 4, 3], [5, 4, 5], [PAD, PAD, PAD], [6, 6, 6]]
    assert has.tolist() == [True, True, False, True]


def test_clashes_resolved_by_hand_and_always_unique() -> None:
    beams = torch.tensor([[[3, 4], [3, 5]], [[3, 4], [4, 4]], [[3, 4], [3, 5]], [[5, 5], [3, 4]]])
    scores = torch.tensor([[-1.0, -2.0], [-0.5, -3.0], [-1.0, -1.5], [-1.0, -2.0]])
    ids, stats = assign_unique(beams, scores, first_word=3, n_words=6)
    # [3,4]: entity 1 has the best score; [3,5] next: entity 2 (-1.5) beats 0 (-2); entity 0 has no beam left:
    # its best beam's last word walks from the first word: [3,3] is free
    assert ids.tolist() == [[3, 3], [3, 4], [3, 5], [5, 5]]
    assert stats == {"collisions_first": 3, "retried": 2, "fallback": 1, "collisions_final": 0}
    gen = torch.Generator().manual_seed(0)
    beams = torch.randint(3, 9, (150, 4, 3), generator=gen)  # 6^3 = 216 IDs for 150 entities: many clashes
    scores = -torch.rand(150, 4, generator=gen).sort(1).values
    ids, stats = assign_unique(beams, scores, first_word=3, n_words=9)
    assert torch.unique(ids, dim=0).shape[0] == 150 and stats["collisions_final"] == 0
    assert ((ids >= 3) & (ids < 9)).all()
    kept = (ids == beams[:, 0]).all(1)
    assert int((~kept).sum()) == stats["retried"] > 0  # only the entities that lost a clash changed their ID


def _pair(n_items: int = 12, n_words: int = 20, id_len: int = 3) -> tuple[IdGenerator, Tiger, torch.Tensor]:
    gen = IdGenerator(n_words=n_words, id_len=id_len, d_model=16, d_kv=8, d_ff=32, n_heads=2, n_layers=1,
                      n_decoder_layers=1, seed=1)  # fmt: skip
    codes = torch.arange(n_items * id_len).view(n_items, id_len) % (n_words - 3) + 3  # distinct rows
    rec = Tiger.from_codes(codes, [n_words] * id_len, d_model=16, d_kv=8, d_ff=32, n_heads=2, n_layers=1,
                           n_decoder_layers=1, vocab_kind="shared", seed=2)  # fmt: skip
    text = torch.randint(3, n_words, (n_items, 5), generator=torch.Generator().manual_seed(3))
    return gen, rec, text


def test_textual_tiger_shares_one_word_block() -> None:
    _, rec, _ = _pair()
    assert rec.vocab_size == 2 + 20 and rec.offsets.tolist() == [2, 2, 2]
    assert rec.item_tokens(torch.tensor([1])).tolist() == [(rec.codes[1] + 2).tolist()]
    items, scores = rec.recommend(torch.tensor([[0, 1, 2], [-1, 3, 4]]), k=5)
    assert all(len(set(row)) == 5 and min(row) >= 0 for row in items.tolist())
    assert (
        torch.isfinite(scores).all() and (scores[:, :-1] >= scores[:, 1:]).all()
    )  # best first  # distinct real items under the trie


def test_gradient_reaches_the_generator_in_the_id_round_only() -> None:
    gen, rec, text = _pair()
    batch = {"history": torch.tensor([[-1, 0, 1], [2, 3, 4]]), "target": torch.tensor([5, 6])}
    soft = round_model("id", gen, rec, text)
    soft.train()
    soft(batch).backward()
    gen_grads = [p.grad for p in gen.parameters()]
    assert all(g is not None for g in gen_grads) and sum(float(g.abs().sum()) for g in gen_grads) > 0
    assert gen.t5.shared.weight.grad.abs().sum() > 0 and gen.t5.lm_head.weight.grad is not None
    assert all(p.grad is None for p in rec.parameters())  # the recommender is frozen
    gen.zero_grad(set_to_none=True)

    hard = round_model("rec", gen, rec, text)
    assert hard is rec
    hard(batch).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in gen.parameters())
    assert sum(float(p.grad.abs().sum()) for p in rec.parameters() if p.grad is not None) > 0
    assert all(p.requires_grad for p in rec.parameters()) and not any(p.requires_grad for p in gen.parameters())


def test_soft_ids_equal_hard_ids_when_the_generator_is_certain() -> None:
    """probs x embeddings: a one-hot distribution on the current ID gives exactly the hard-ID loss."""
    gen, rec, text = _pair()
    soft = round_model("id", gen, rec, text)
    rec.eval()
    batch = {"history": torch.tensor([[-1, 0, 1], [2, 3, 4]]), "target": torch.tensor([5, 6])}
    # logits peaked on the words of the current IDs: softmax is one-hot, probs x embeddings = the hard embeddings
    soft.gen.word_logits = lambda text, ids: torch.nn.functional.one_hot(ids, 20).float() * 1e4  # type: ignore[method-assign]
    with torch.no_grad():
        assert torch.allclose(soft(batch), rec.loss(batch), atol=1e-5)


# ----- end to end ----------------------------------------------------------------------------------------
def _dataset(root: Path, name: str = "syn", extra: list[str] | None = None) -> list[str]:
    d = ["--data-dir", str(root)]
    assert main(["preprocess", "synthetic", "--name", name, "-c", "tiny", *SYN, *(extra or []), *d]) == 0
    return d


def _check_round(root: Path, view: str, r: int, dataset: str = "syn") -> None:
    who = "item" if view == "item" else "friend"
    home = root / dataset
    ids_folder = home / "ids" / f"gen-{who}-round{r}"
    cs = CodeSet.load(ids_folder)
    assert cs.kind == "text" and cs.tokens is not None and cs.tokens[: len(SPECIALS)] == list(SPECIALS)
    assert np.unique(cs.codes, axis=0).shape[0] == cs.n_items  # unique IDs
    assert cs.codes.min() >= len(SPECIALS)  # words only
    n = pl.read_parquet(home / "processed" / ("items.parquet" if view == "item" else "users.parquet")).height
    assert cs.n_items == n and cs.codes.shape[1] == 3
    gen_stats = json.loads((home / "runs" / f"gen-{who}-round{r}" / "manifest.json").read_text())["stats"]
    assert gen_stats["collisions_final"] == 0 and gen_stats["retried"] >= gen_stats["fallback"] >= 0
    assert (home / "runs" / f"gen-{who}-round{r}" / "tokenizer.json").is_file()
    split = "test" if view == "item" else "social-test"
    metrics = json.loads((home / "metrics" / f"rec-{view}-round{r}" / split / "metrics.json").read_text())
    assert metrics["users"] > 0 and metrics["invalid_rate"] == 0


def test_train_item_view_and_resume_after_a_kill_mid_round(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = tmp_path / "ref"
    d = _dataset(ref)
    assert main(["train", "syn", "--view", "item", "-c", "tiny", *d]) == 0
    for r in (1, 2):
        _check_round(ref, "item", r)
    rounds = pl.read_parquet(ref / "syn" / "runs" / "train-item" / "rounds.parquet")
    assert rounds.select("round", "view").rows() == [(1, "item"), (2, "item")]
    assert (ref / "syn" / "runs" / "train-item" / "rounds.png").stat().st_size > 0
    # any round can be sampled and evaluated by the ordinary stages
    assert main(["sample", "syn", "--run", "rec-item-round1", "--split", "valid", "--name", "r1v", *d]) == 0
    assert main(["evaluate", "syn", "--split", "valid", "--run", "r1v", *d]) == 0

    # kill in the middle of round 2's generator phase, then --resume
    from stages.training import loop

    killed = tmp_path / "killed"
    dk = _dataset(killed)
    step = loop._Trainer.train_step

    def dying(self: loop._Trainer, idx: torch.Tensor) -> torch.Tensor:
        if "gen-item-round2" in self.desc and self.step == 25:
            raise KeyboardInterrupt
        return step(self, idx)

    monkeypatch.setattr(loop._Trainer, "train_step", dying)
    assert main(["train", "syn", "--view", "item", "-c", "tiny", *dk]) == 130
    assert not (killed / "syn" / "runs" / "gen-item-round2").exists()
    round1 = (killed / "syn" / "runs" / "rec-item-round1" / "manifest.json").read_text()
    monkeypatch.setattr(loop._Trainer, "train_step", step)
    assert main(["train", "syn", "--view", "item", "-c", "tiny", "--resume", *dk]) == 0
    assert (killed / "syn" / "runs" / "rec-item-round1" / "manifest.json").read_text() == round1  # not retrained
    log = (killed / "syn" / "runs" / ".gen-item-round2.work" / "train.log").read_text()
    assert "resumed at step 20" in log
    from safetensors.torch import load_file

    for run, file in (("gen-item-round2", "generator.safetensors"), ("rec-item-round2", "model.safetensors")):
        a = load_file(str(ref / "syn" / "runs" / run / file))
        b = load_file(str(killed / "syn" / "runs" / run / file))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), run
    assert CodeSet.load(ref / "syn" / "ids" / "gen-item-round2").codes.tolist() == \
        CodeSet.load(killed / "syn" / "ids" / "gen-item-round2").codes.tolist()  # fmt: skip


def test_train_social_and_both_views(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fresh = [
        "--data-dir",
        str(tmp_path / "fresh"),
    ]  # no processed data: `gdr train` preprocesses (source = dataset name)
    sizes = [arg if arg == "--set" else f"preprocess.{arg}" for arg in SYN]  # --set preprocess.synthetic.users=120 ...
    assert main(["train", "synthetic", "--view", "social", "-c", "tiny", "--rounds", "1", *sizes, *fresh]) == 0
    assert "running `gdr preprocess synthetic` first" in capsys.readouterr().err
    _check_round(tmp_path / "fresh", "social", 1, dataset="synthetic")
    users = pl.read_parquet(tmp_path / "fresh" / "synthetic" / "processed" / "users.parquet").height
    assert users <= 120  # the --set preprocess.synthetic.* sizes reached preprocess

    d = _dataset(tmp_path)
    assert main(["train", "syn", "--view", "both", "-c", "tiny", *d]) == 0
    for view in ("item", "social"):
        for r in (1, 2):
            _check_round(tmp_path, view, r)
    rounds = pl.read_parquet(tmp_path / "syn" / "runs" / "train-both" / "rounds.parquet")
    assert rounds.select("round", "view").rows() == [(1, "item"), (1, "social"), (2, "item"), (2, "social")]
    # both views share one word vocabulary
    item_words = CodeSet.load(tmp_path / "syn" / "ids" / "gen-item-round1").tokens
    assert CodeSet.load(tmp_path / "syn" / "ids" / "gen-friend-round1").tokens == item_words
    # the social run recommends users, never the user themself
    recs = pl.read_parquet(tmp_path / "syn" / "recs" / "rec-social-round2" / "social-test" / "recs.parquet")
    assert recs.filter(pl.col("user") == pl.col("item")).height == 0


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lone = _dataset(tmp_path, "lone", ["--set", "synthetic.friends=0"])
    capsys.readouterr()
    assert main(["train", "lone", "--view", "social", "-c", "tiny", *lone]) != 0
    line = error_line(capsys.readouterr().err)
    assert "has no social graph" in line and "lastfm-2k" in line
    assert not (tmp_path / "lone" / "runs").exists()

    d = _dataset(tmp_path, "syn")
    assert main(["train-gen", "syn", "-c", "tiny", "--rounds", "1", *d]) == 0
    capsys.readouterr()
    foreign = str(tmp_path / "syn" / "runs" / "gen-item-round1")
    assert main(["train-gen", "lone", "-c", "tiny", "--rounds", "1", "--init", foreign, *lone]) != 0
    line = error_line(capsys.readouterr().err)
    assert "'syn'" in line and "'lone'" in line and "generator" in line
    assert main(["train-gen", "syn", "-c", "tiny", "--init", str(tmp_path / "nowhere"), *d]) != 0
    assert "T5" in error_line(capsys.readouterr().err)


@pytest.mark.parametrize("diversity", [0.0, 100.0])
def test_generator_beams_are_distinct_sorted_and_scored_exactly(diversity: float) -> None:
    gen, _, text = _pair(n_items=6, n_words=12)
    gen.eval()
    ids, scores = gen.beam(text, beams=5, diversity=diversity)
    assert ids.shape == (6, 5, 3) and (ids >= len(SPECIALS)).all()  # never a special token
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first
    for row in ids.tolist():
        assert len({tuple(x) for x in row}) == 5  # distinct candidates
        if diversity:
            assert len({x[0] for x in row}) == 5  # a large penalty makes every group start with another word
    # each score is the exact teacher-forced log-probability of its ID
    with torch.no_grad():
        logp = gen.word_logits(text.repeat_interleave(5, 0), ids.flatten(0, 1)).log_softmax(-1)
        exact = logp.gather(-1, ids.flatten(0, 1)[..., None]).squeeze(-1).sum(-1).view(6, 5)
    assert torch.allclose(scores, exact, atol=1e-4)
    if not diversity:  # one beam is the greedy path: each word the argmax after the previous ones
        greedy = gen.beam(text, beams=1)[0][:, 0]
        with torch.no_grad():
            assert torch.equal(gen.word_logits(text, greedy).argmax(-1), greedy)


def test_trie_children_by_edge_runs_equal_the_dense_table() -> None:
    """A shared word vocabulary makes the trie sparse; its scatter lookup must equal the dense table."""
    from stages.ids.trie import Trie

    g = torch.Generator().manual_seed(0)
    codes = torch.unique(torch.randint(0, 40, (2000, 3), generator=g), dim=0)
    dense, sparse = Trie(codes, [40] * 3), Trie(codes, [40] * 3, dense_limit=0)
    assert all(t is None for t in sparse.tables)
    for d in range(3):
        nodes = torch.randint(0, dense.n_nodes[d], (300,), generator=g)
        assert torch.equal(sparse.children(d, nodes), dense.children(d, nodes))
    # every real code is a path of the trie, and a digit that no code has at the root is -1
    root = sparse.children(0, torch.tensor([0]))[0]
    assert set((root >= 0).nonzero().flatten().tolist()) == set(codes[:, 0].tolist())


def test_items_without_text_get_unique_ids_by_the_stated_rule(tmp_path: Path) -> None:
    d = _dataset(tmp_path)
    items_path = tmp_path / "syn" / "processed" / "items.parquet"
    items = pl.read_parquet(items_path)
    blank = items["item"] < 6
    items.with_columns(pl.when(blank).then(pl.lit(None)).otherwise(pl.col("text")).alias("text")).write_parquet(
        items_path
    )
    assert main(["train-gen", "syn", "-c", "tiny", "--rounds", "1", *d]) == 0
    stats = json.loads((tmp_path / "syn" / "runs" / "gen-item-round1" / "manifest.json").read_text())["stats"]
    assert stats["empty_text"] == 6 and "[EMPTY]" in stats["empty_text_rule"] and stats["collisions_final"] == 0
    codes = CodeSet.load(tmp_path / "syn" / "ids" / "gen-item-round1").codes
    assert np.unique(codes, axis=0).shape[0] == codes.shape[0]
    # the six text-less items read the same input, so at most one keeps its best beam: the rest retried
    assert stats["retried"] >= 5


def test_generator_starts_from_a_local_pretrained_t5(tmp_path: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    cfg = T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
    hf = T5ForConditionalGeneration.from_pretrained(tmp_path / "t5")
    gen = IdGenerator.create(n_words=30, id_len=2, init=tmp_path / "t5", seed=0, d_model=64)
    assert gen.t5.config.d_model == 16  # the checkpoint's architecture wins over the sizes given
    assert torch.equal(gen.t5.shared.weight, hf.shared.weight[:30])  # embeddings cut to the word vocabulary
    block = "encoder.block.0.layer.0.SelfAttention.q.weight"
    assert torch.equal(gen.t5.state_dict()[block], hf.state_dict()[block])


def test_anchor_adds_the_generators_cross_entropy_on_the_current_ids() -> None:
    gen, rec, text = _pair()
    batch = {"history": torch.tensor([[-1, 0, 1], [2, 3, 4]]), "target": torch.tensor([5, 6])}
    plain, anchored = round_model("id", gen, rec, text), round_model("id", gen, rec, text, anchor=0.5)
    plain.eval(), anchored.eval()  # no dropout: the two forward passes see the same models
    with torch.no_grad():
        items = torch.tensor([0, 1, 2, 3, 4])  # the history's items (padding reads item 0, already there)
        ce = torch.nn.functional.cross_entropy(
            gen.word_logits(text[items], rec.codes[items]).flatten(0, 1), rec.codes[items].flatten()
        )
        assert torch.allclose(anchored(batch), plain(batch) + 0.5 * ce, atol=1e-5)


def test_social_view_with_textual_ids_learns_above_social_popularity(tmp_path: Path) -> None:
    """A homophilous synthetic friend graph (90% of friends share the home cluster, whose items' words
    make the users' profiles): the textual-ID friend recommender beats the most-connected users."""
    d = ["--data-dir", str(tmp_path)]
    graph = ["--set", "synthetic.users=200", "--set", "synthetic.items=60", "--set", "synthetic.clusters=8",
             "--set", "synthetic.friends=12", "--set", "synthetic.homophily=0.9"]  # fmt: skip
    assert main(["preprocess", "synthetic", "--name", "syn", *graph, *d]) == 0
    assert main(["train-rec", "syn", "--model", "pop", "--view", "social", "--run", "spop", *d]) == 0
    assert main(["sample", "syn", "--run", "spop", "--split", "valid", *d]) == 0
    assert main(["train", "syn", "--view", "social", "-c", "tiny", "--rounds", "1", "--rec-epochs", "6",
                 "--set", "train_gen.keyword_epochs=30", "--set", "train_gen.recommender.train.lr=3e-3",
                 "--set", "sample.split=valid", *d]) == 0  # fmt: skip
    metrics = tmp_path / "syn" / "metrics"
    ndcg = {
        run: json.loads((metrics / run / "social-valid" / "metrics.json").read_text())["ndcg@10"]
        for run in ("spop", "rec-social-round1")
    }
    assert ndcg["rec-social-round1"] > 1.5 * ndcg["spop"], ndcg
