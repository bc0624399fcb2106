"""Corruption training of the textual-ID recommender (`train-gen`, `train --view both`): exclusive-word
cross-view tokens, specials never corrupted, the KL over the shared word vocabulary on a hand-computed
case, off = bit-identical, `--view both` end to end with the KL logged and the other view in the
manifests, and a bad other view in one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F

import stages.models.tiger_corruption as tc
from gdr_cli.app import main
from gdr_cli.manifest import manifest_hash
from stages.ids.codeset import CodeSet
from stages.models.other_view import OtherView, exclusive_tokens
from stages.models.tiger import Tiger, corrupting_tiger
from stages.models.tiger_corruption import text_first_token

SIZES = dict(d_model=16, d_kv=4, d_ff=32, n_heads=2, n_layers=1, n_decoder_layers=1, dropout=0.0)
SYN = ["--set", "synthetic.users=120", "--set", "synthetic.items=50", "--set", "synthetic.clusters=5",
       "--set", "synthetic.friends=8", "--set", "synthetic.homophily=0.9"]  # fmt: skip


class Cfg:
    """The corruption keys of a `TigerConfig` (T = 2: t = 1 corrupts every corruptible token)."""

    use_diffusion, diffusion_timesteps, diffusion_beta_max, noise_head_dropout = 1, 2, 1.0, 0.0
    lambda_mask, lambda_kl = 0.1, 0.5

    def __init__(self, cross_prob: float) -> None:
        self.diffusion_cross_prob = cross_prob


def text_tiger(cross_prob: float, pool: list[int], other: Tiger | None = None, seed: int = 5) -> Tiger:
    """12 items with 3-word IDs over 20 words (ids 0-2 = the tokenizer's specials); item 0's ID holds [EMPTY]
    (word 2) and item 1's [UNK] (word 1), so the protection of specials is exercised."""
    codes = torch.tensor([[2, 3, 4], [1, 5, 6]] + [[3 + i, 4 + (i % 5), 10 + i % 7] for i in range(10)])
    other_view = OtherView(torch.tensor(pool, dtype=torch.int64), other)
    return corrupting_tiger(codes, [20, 20, 20], Cfg(cross_prob), other_view, vocab_kind="shared", seed=seed,
                            encoder_input="tokens", **SIZES)  # fmt: skip


def record_corruption(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    calls: list[dict[str, torch.Tensor]] = []
    real = tc.corrupt_tokens

    def spy(tokens: torch.Tensor, t: torch.Tensor, **kw):  # type: ignore[no-untyped-def]
        noisy, mask = real(tokens, t, **kw)
        calls.append({"tokens": tokens, "t": t, "noisy": noisy, "mask": mask, "protect": kw["protect"]})
        return noisy, mask

    monkeypatch.setattr(tc, "corrupt_tokens", spy)
    return calls


BATCH = {
    "history": torch.tensor([[-1, 0, 1, 2], [0, 1, 3, 4], [-1, -1, 1, 5]] * 20),
    "target": torch.tensor([3, 6, 7] * 20),
}


def test_exclusive_words_by_hand() -> None:
    this = torch.tensor([[3, 4, 5], [3, 6, 7]])
    other = torch.tensor([[4, 8, 9], [8, 10, 3]])
    assert exclusive_tokens(this, other).tolist() == [10, 11, 12]  # words 8, 9, 10 -> tokens 2 + w
    assert exclusive_tokens(other, other).tolist() == []


@pytest.mark.parametrize("cross_prob", [0.0, 1.0])
def test_specials_never_corrupted_and_replacements_from_the_right_pool(
    cross_prob: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = [17, 19, 21]  # tokens of words 15, 17, 19: the other view's exclusive words
    model = text_tiger(cross_prob, pool).train()
    assert model.corruption is not None and model.corruption.n_cross == 0  # in-vocabulary pool, no extra rows
    assert text_first_token() == 5 and model.corruption.first_token == 5
    calls = record_corruption(monkeypatch)
    torch.manual_seed(0)
    model.loss(BATCH)
    (c,) = calls
    tokens, noisy, mask, protect = c["tokens"], c["noisy"], c["mask"], c["protect"]
    assert torch.equal(protect, tokens < 5)  # pad, eos and the words [PAD] [UNK] [EMPTY]
    assert (tokens[tokens > 0] < 5).sum() == 5 * 20  # [EMPTY] of item 0, [UNK] of item 1: 2 + 2 + 1 per 3 rows
    assert not mask[protect].any() and torch.equal(noisy[protect], tokens[protect])
    full = c["t"] == 1  # alphabar_1 = 0: every corruptible token of these rows is corrupted
    assert 0 < int(full.sum()) < 60
    assert torch.equal(mask[full], ~protect[full]) and not mask[~full].any()
    replaced = noisy[mask]
    if cross_prob == 1.0:
        assert set(replaced.tolist()) == set(pool)  # only, and every one of, the exclusive words
    else:
        assert (replaced >= 5).all() and (replaced < model.vocab_size).all()  # never a special
        assert len(set(replaced.tolist()) - set(pool)) > 5  # uniform over the whole word vocabulary


def test_kl_over_the_shared_vocabulary_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other view's model reads the same corrupted words (its own plain input: it has no timestep
    tokens) and the KL is the mean over the B*D decoding positions of sum_v p (log p - log q) over all
    V output ids."""
    codes = torch.tensor([[4 + i % 9, 5 + i % 7, 6 + i % 11] for i in range(15)])
    other = Tiger.from_codes(codes, [20, 20, 20], vocab_kind="shared", seed=11, encoder_input="tokens", **SIZES).eval()
    model = text_tiger(0.5, [17, 19], other=other).train()
    calls = record_corruption(monkeypatch)
    torch.manual_seed(1)
    loss = model.loss(BATCH)
    terms = model.loss_terms
    (c,) = calls
    with torch.no_grad():
        labels = model.item_tokens(BATCH["target"])
        dec_in = F.pad(labels[:, :-1], (1, 0))

        def logits(m: Tiger, timesteps: torch.Tensor | None) -> torch.Tensor:
            embed, mask = m.encoder_inputs(BATCH["history"], tokens=c["noisy"], timesteps=timesteps)
            hidden = m.t5.encoder(inputs_embeds=embed, attention_mask=mask).last_hidden_state
            out = m.t5.decoder(input_ids=dec_in, encoder_hidden_states=hidden, encoder_attention_mask=mask)
            return m.logits(out.last_hidden_state).log_softmax(-1)  # [B, D, V]

        log_p, log_q = logits(model, c["t"]), logits(other, None)
        assert log_p.shape[-1] == log_q.shape[-1] == model.vocab_size == 22
        expected = (log_p.exp() * (log_p - log_q)).sum(-1).mean()
        ce = F.cross_entropy(log_p.flatten(0, 1), labels.flatten())
    assert terms["loss_kl"].item() == pytest.approx(expected.item(), rel=1e-5) and expected > 0.01
    assert terms["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    total = terms["loss_ce"] + 0.1 * terms["loss_mask"] + 0.5 * terms["loss_kl"]
    assert loss.item() == pytest.approx(total.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in other.parameters())


# ----- end to end ----------------------------------------------------------------------------------------
def _dataset(root: Path, name: str = "syn") -> list[str]:
    d = ["--data-dir", str(root)]
    assert main(["preprocess", "synthetic", "--name", name, "-c", "tiny", *SYN, *d]) == 0
    return d


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_off_is_bit_identical_to_the_plain_textual_recommender(tmp_path: Path) -> None:
    plain, off = _dataset(tmp_path / "plain"), _dataset(tmp_path / "off")
    assert main(["train-gen", "syn", "-c", "tiny", "--rounds", "1", *plain]) == 0
    assert main(["train-gen", "syn", "-c", "tiny", "--rounds", "1", "--use-diffusion", "0", "--diffusion-timesteps", "7",
                 "--lambda-mask", "0.7", "--diffusion-cross-prob", "1", "--other-view-ids", "nowhere", *off]) == 0  # fmt: skip
    a, b = (tmp_path / x / "syn" / "runs" / "rec-item-round1" for x in ("plain", "off"))
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    spec = json.loads((a / "model.json").read_text())
    assert spec == json.loads((b / "model.json").read_text()) and "corruption" not in spec["init_kwargs"]
    la, lb = pl.read_parquet(a / "train_log.parquet"), pl.read_parquet(b / "train_log.parquet")
    assert lb.equals(la.with_columns(lb["wall_s"], lb["examples_per_s"]))
    assert not [c for c in lb.columns if c.startswith("loss_")]
    assert set(json.loads((b / "manifest.json").read_text())["inputs"]) == {"processed", "ids"}


def test_both_views_with_kl_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _dataset(tmp_path)
    capsys.readouterr()
    assert main(["train", "syn", "--view", "both", "-c", "tiny", "--use-diffusion", "1", "--lambda-kl", "0.3",
                 "--name-prefix", "kl-", "--set", "train_gen.id_max_steps=3", *d]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("round 1 trains before any social IDs exist") == 1 and "single view" not in err
    home = tmp_path / "syn"
    for gen in ("kl-gen-item-round2", "kl-gen-friend-round2"):  # the soft-ID phase cut at id_max_steps
        assert json.loads((home / "runs" / gen / "manifest.json").read_text())["stats"]["steps"] == 3
    rounds = pl.read_parquet(home / "runs" / "kl-train-both" / "rounds.parquet")
    assert rounds.select("round", "view").rows() == [(1, "item"), (1, "social"), (2, "item"), (2, "social")]
    partner = {"rec-item-round1": None, "rec-social-round1": "rec-item-round1",
               "rec-item-round2": "rec-social-round1", "rec-social-round2": "rec-item-round2"}  # fmt: skip
    for run, other in partner.items():
        folder = home / "runs" / f"kl-{run}"
        manifest = json.loads((folder / "manifest.json").read_text())
        log = pl.read_parquet(folder / "train_log.parquet").filter(pl.col("loss").is_not_null())
        total = log["loss_ce"] + 0.1 * log["loss_mask"] + 0.3 * log["loss_kl"]
        assert ((log["loss"] - total).abs() < 1e-4).all() and (log["loss_mask"] > 0).all()
        if other is None:  # the item view's round 1: no other view yet
            assert (log["loss_kl"] == 0).all() and "other_view_run" not in manifest["inputs"]
            assert manifest["stats"]["cross_view_tokens"] == 0
            continue
        assert (log["loss_kl"] > 0).all(), run
        ref = manifest["inputs"]["other_view_run"]
        assert ref["path"] == f"syn/runs/kl-{other}" and ref["sha256"] == manifest_hash(home / "runs" / f"kl-{other}")
        # cross-view words: those of the other view's IDs (its run's ID set) in none of this view's IDs
        this_ids = CodeSet.load(home / "ids" / manifest["inputs"]["ids"]["path"].split("/")[-1]).codes
        other_ids = CodeSet.load(
            home / "ids" / json.loads((home / "runs" / f"kl-{other}" / "model.json").read_text())["meta"]["ids"]
        ).codes
        expected = exclusive_tokens(torch.as_tensor(this_ids), torch.as_tensor(other_ids))
        assert manifest["stats"]["cross_view_tokens"] == len(expected) and manifest["stats"]["kl"] is True
    assert "(ce " in (home / "runs" / "kl-rec-social-round1" / "train.log").read_text()
    spec = json.loads((home / "runs" / "kl-rec-item-round2" / "model.json").read_text())
    assert spec["init_kwargs"]["corruption"]["first_token"] == 5 and spec["init_kwargs"]["corruption"]["n_cross"] == 0
    metrics = json.loads((home / "metrics" / "kl-rec-social-round2" / "social-test" / "metrics.json").read_text())
    assert metrics["users"] > 0 and metrics["invalid_rate"] == 0

    # without the KL: the other view's IDs are the input (cross-view words only)
    assert main(["train", "syn", "--view", "both", "-c", "tiny", "--rounds", "1", "--use-diffusion", "1",
                 "--lambda-kl", "0", "--name-prefix", "x-", *d]) == 0  # fmt: skip
    manifest = json.loads((home / "runs" / "x-rec-social-round1" / "manifest.json").read_text())
    assert manifest["inputs"]["other_view_ids"]["path"] == "syn/ids/x-gen-item-round1"
    assert "other_view_run" not in manifest["inputs"] and manifest["stats"]["kl"] is False
    log = pl.read_parquet(home / "runs" / "x-rec-social-round1" / "train_log.parquet")
    assert (log["loss_kl"].drop_nulls() == 0).all()


def test_single_view_and_bad_other_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _dataset(tmp_path)
    capsys.readouterr()
    assert main(["train-gen", "syn", "-c", "tiny", "--view", "social", "--use-diffusion", "1", *d]) == 0
    err = capsys.readouterr().err
    assert err.count("single view") == 1 and err.count("no KL term") == 1  # said once over the two rounds
    # the social run as the other view of the item view: manifest names it, KL logged
    assert main(["train-gen", "syn", "-c", "tiny", "--rounds", "1", "--use-diffusion", "1", "--other-view-run",
                 "rec-social-round2", *d]) == 0  # fmt: skip
    home = tmp_path / "syn"
    manifest = json.loads((home / "runs" / "rec-item-round1" / "manifest.json").read_text())
    assert manifest["inputs"]["other_view_run"]["path"] == "syn/runs/rec-social-round2"
    assert (pl.read_parquet(home / "runs" / "rec-item-round1" / "train_log.parquet")["loss_kl"].drop_nulls() > 0).all()

    # train-rec on a textual ID set: the same textual corruption (specials protected, in-vocabulary pool)
    assert main(["train-rec", "syn", "--model", "tiger", "--ids", "gen-item-round1", "--run", "trt", "-c", "tiny",
                 "--epochs", "1", "--use-diffusion", "1", "--other-view-ids", "gen-friend-round2", *d]) == 0  # fmt: skip
    spec = json.loads((home / "runs" / "trt" / "model.json").read_text())["init_kwargs"]
    assert (
        spec["vocab_kind"] == "shared" and spec["corruption"]["first_token"] == 5 and spec["corruption"]["n_cross"] == 0
    )
    inputs = json.loads((home / "runs" / "trt" / "manifest.json").read_text())["inputs"]
    assert inputs["other_view_ids"]["path"] == "syn/ids/gen-friend-round2"

    def fails(args: list[str], *needles: str) -> None:
        capsys.readouterr()
        assert main(args) != 0
        line = error_line(capsys.readouterr().err)
        assert all(n in line for n in needles), line

    base = ["train-gen", "syn", "-c", "tiny", "--rounds", "1", "--use-diffusion", "1", "--name-prefix", "bad-", *d]
    fails([*base, "--other-view-run", "nope"], "no run 'nope'", "train-gen syn --view social")
    fails([*base, "--other-view-run", "rec-item-round1"], "item view, the same as this run")
    _dataset(tmp_path, "syn2")  # another dataset of the same root: a copy of syn's social run in its runs/
    shutil.copytree(home / "runs" / "rec-social-round2", tmp_path / "syn2" / "runs" / "foreign")
    fails(["train-gen", "syn2", "-c", "tiny", "--rounds", "1", "--use-diffusion", "1", "--other-view-run", "foreign",
           "--data-dir", str(tmp_path)], "trained on dataset 'syn', not 'syn2'")  # fmt: skip
    fails([*base, "--other-view-ids", "gen-item-round1"], "is for the item view, not social")
    fails(["train", "syn", "--view", "both", "-c", "tiny", "--use-diffusion", "1", "--other-view-run", "x", *d],
          "other_view_run is set", "--view both")  # fmt: skip
    assert not [p for p in (home / "runs").iterdir() if p.name.startswith("bad-")]  # failed before any training
