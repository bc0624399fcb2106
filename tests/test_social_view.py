"""The social view (next-friend recommendation) through train-rec, sample and evaluate.

A hand-made friend graph is split, ranked by social popularity and scored to hand-computed
NDCG/MRR; popularity never recommends the user themself (nor, under --exclude-history, a
training friend) and still returns K distinct users; tiger learns the homophilous synthetic
friend graph (validation NDCG@10 above social popularity); the social and item views never mix;
bad input (no friend graph, an ID set of the other view) ends in one error line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
import torch

from gdr_cli.app import main
from stages.models.popularity import Popularity
from stages.training.validation import make_validator

# friend lists in input order; every user also needs an item sequence (>= 3 items)
FRIENDS = "a b c d e\nb c d\nc d\n"
SEQUENCES = "a x y z w\nb x y z\nc y z w\nd z w x\ne w x y\n"


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def metrics_json(out: str) -> dict:
    return json.loads(out[out.index("{") :])


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset 'hand' from a sequences folder with friend_sequence.txt (no k-core filtering)."""
    root = tmp_path_factory.mktemp("social_hand")
    src = root / "src"
    src.mkdir()
    (src / "user_sequence.txt").write_text(SEQUENCES)
    (src / "friend_sequence.txt").write_text(FRIENDS)
    args = ["preprocess", "sequences", "--input", str(src), "--name", "hand", "--data-dir", str(root)]
    assert main([*args, "--min-user", "0", "--min-item", "0"]) == 0
    return root


def test_hand_graph_split_and_scoring(hand: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(hand)]
    users = pl.read_parquet(hand / "hand" / "processed" / "users.parquet")
    uid = dict(zip(users["raw_id"], users["user"], strict=True))
    assert [uid[u] for u in "abcde"] == [0, 1, 2, 3, 4]
    # edges in order of first mention: ab ac ad ae bc bd cd; e has one friend and is dropped
    # a: b c | d | e    b: a | c | d    c: a | b | d    d: a | b | c
    # held-out a-d also leaves d's training list, which empties it: d is dropped
    splits = pl.read_parquet(hand / "hand" / "processed" / "social_splits.parquet")
    assert splits.to_dicts() == [
        {"user": 0, "train": [1, 2], "valid": 3, "test": 4},
        {"user": 1, "train": [0], "valid": 2, "test": 3},
        {"user": 2, "train": [0], "valid": 1, "test": 3},
    ]

    # social pop: training friend lists count a 2, b 1, c 1, d 0, e 0 -> order a b c d e (ties by id)
    assert main(["train-rec", "hand", "--model", "pop", "--view", "social", "--run", "spop", *d]) == 0
    manifest = json.loads((hand / "hand" / "runs" / "spop" / "manifest.json").read_text())
    assert manifest["stats"]["view"] == "social" and manifest["stats"]["items"] == 5
    for split in ("valid", "test"):
        assert main(["sample", "hand", "--run", "spop", "--split", split, "-k", "4", *d]) == 0
    assert main(["sample", "hand", "--run", "spop", "--name", "spop-x", "--exclude-history", "-k", "4", *d]) == 0
    recs = pl.read_parquet(hand / "hand" / "recs" / "spop" / "social-test" / "recs.parquet")
    lists = recs.group_by("user", maintain_order=True).agg("item").sort("user")["item"].to_list()
    assert lists == [[1, 2, 3, 4], [0, 2, 3, 4], [0, 1, 3, 4]]  # never the user themself

    capsys.readouterr()
    assert main(["evaluate", "hand", "--view", "social", "--json", *d]) == 0, capsys.readouterr().err
    got = metrics_json(capsys.readouterr().out)
    assert set(got) == {"spop", "spop-x"}  # every social-view test run
    # test targets e, d, d sit at ranks 4, 3, 3 of the lists above
    m = got["spop"]
    assert m["users"] == 3 and m["recall@1"] == 0.0 and m["recall@5"] == 1.0
    assert m["ndcg@10"] == pytest.approx((1 / math.log2(5) + 2 * 0.5) / 3)
    assert m["mrr@10"] == pytest.approx((1 / 4 + 2 * (1 / 3)) / 3)
    assert m["ndcg@1"] == 0.0 and m["view"] == "social" and not m["exclude_history"]
    # excluding the training and validation friends leaves each user's test friend first:
    # a: {e}, b: {d, e}, c: {d, e}
    x = got["spop-x"]
    assert x["ndcg@1"] == 1.0 and x["exclude_history"]
    xrecs = pl.read_parquet(hand / "hand" / "recs" / "spop-x" / "social-test" / "recs.parquet")
    assert xrecs.group_by("user").len().sort("user")["len"].to_list() == [1, 2, 2]  # all the catalogue allows

    capsys.readouterr()
    assert main(["evaluate", "hand", "--view", "social", "--split", "valid", "--json", *d]) == 0
    # valid targets d, c, b at ranks 3, 2, 2 of the (same) lists
    v = metrics_json(capsys.readouterr().out)["spop"]
    assert v["ndcg@10"] == pytest.approx((0.5 + 2 / math.log2(3)) / 3)
    report = hand / "hand" / "reports" / "social-valid" / "comparison.md"
    assert report.is_file() and not (hand / "hand" / "reports" / "valid").exists()


def test_item_and_social_recs_do_not_collide(hand: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(hand)]
    assert main(["train-rec", "hand", "--model", "pop", "--run", "ipop", *d]) == 0
    assert main(["train-rec", "hand", "--model", "pop", "--view", "social", "--run", "spop2", *d]) == 0
    for run in ("ipop", "spop2"):  # one recommendations name for both views
        assert main(["sample", "hand", "--run", run, "--name", "same", "-k", "4", *d]) == 0
    home = hand / "hand" / "recs" / "same"
    assert {p.name for p in home.iterdir()} == {"test", "social-test"}
    items = pl.read_parquet(home / "test" / "recs.parquet")
    assert items["item"].max() < 4  # items x y z w
    capsys.readouterr()
    assert main(["evaluate", "hand", "--json", "--run", "same", *d]) == 0
    item_view = metrics_json(capsys.readouterr().out)["same"]
    assert main(["evaluate", "hand", "--view", "social", "--json", "--run", "same", *d]) == 0
    social_view = metrics_json(capsys.readouterr().out)["same"]
    assert item_view["users"] == 5 and social_view["users"] == 3 and item_view["view"] == "item"
    assert {p.name for p in (hand / "hand" / "metrics" / "same").iterdir()} == {"test", "social-test"}
    assert {p.name for p in (hand / "hand" / "reports").iterdir()} >= {"test", "social-test"}

    def fails(args: list[str], *needles: str) -> None:
        capsys.readouterr()
        assert main([*args, *d]) != 0
        line = error_line(capsys.readouterr().err)
        for needle in needles:
            assert needle in line, line

    fails(["sample", "hand", "--run", "spop2", "--view", "item"], "trained on the social view, not item")
    fails(["sample", "hand", "--run", "ipop", "--view", "social"], "trained on the item view, not social")
    fails(["evaluate", "hand", "--view", "social", "--run", "spop2", "--split", "valid"], "gdr sample")
    assert main(["sample", "hand", "--run", "ipop", "--name", "only-item", *d]) == 0
    fails(["evaluate", "hand", "--view", "social", "--run", "only-item"], "of the item view, not social", "--view item")


def test_validator_passes_exclusions() -> None:
    """Validation ranks like `sample`: excluded ids are removed during the search (social: the user)."""
    model = Popularity(n_items=3)
    model.fit_counts(torch.tensor([0, 0, 0, 1, 1, 2]))  # order 0, 1, 2
    hist = torch.full((2, 2), -1, dtype=torch.int64)
    targets = torch.tensor([1, 0])
    total, users = make_validator(hist, targets, k=2, batch_size=1)(model, 0, 1)
    assert users == 2 and total == pytest.approx(1 / math.log2(3) + 1.0)  # user 0 ranks itself first
    own = torch.tensor([[0], [1]])
    total, _ = make_validator(hist, targets, k=2, batch_size=1, exclude=own)(model, 0, 1)
    assert total == pytest.approx(2.0)  # user 0: [1, 2], user 1: [0, 2]


SYN = ["--set", "synthetic.users=200", "--set", "synthetic.items=60", "--set", "synthetic.clusters=8",
       "--set", "synthetic.friends=12", "--set", "synthetic.homophily=0.9"]  # fmt: skip
"""A homophilous friend graph: 90% of a user's friends share their home cluster (8 communities)."""

TIGER = ["--model", "tiger", "--view", "social", "--set", "max_len=10", "--set", "tiger.d_model=32",
         "--set", "tiger.d_kv=8", "--set", "tiger.n_heads=2", "--set", "tiger.d_ff=64", "--set", "tiger.n_layers=1",
         "--set", "tiger.n_decoder_layers=1", "--set", "train.batch_size=32", "--set", "train.lr=3e-3",
         "--set", "train.warmup_steps=10", "--set", "train.eval_every=40", "--epochs", "5"]  # fmt: skip


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("social_syn")
    d = ["--data-dir", str(root)]
    assert main(["preprocess", "synthetic", "--name", "syn", *SYN, *d]) == 0
    assert main(["build-ids", "syn", "--view", "social", "--levels", "2", "--codebook", "8", "--ids", "users", *d]) == 0
    assert (
        main(["build-ids", "syn", "--method", "random", "--levels", "2", "--codebook", "8", "--ids", "items", *d]) == 0
    )
    assert main(["train-rec", "syn", "--model", "pop", "--view", "social", "--run", "spop", *d]) == 0
    return root


def friend_lists(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "syn" / "processed" / "social_splits.parquet")


@pytest.mark.parametrize("exclude", [False, True], ids=["kept", "excluded"])
def test_social_pop_never_self_and_k_distinct(syn: Path, exclude: bool, capsys: pytest.CaptureFixture[str]) -> None:
    flag = "--exclude-history" if exclude else "--keep-history"
    name = f"spop-{'x' if exclude else 'k'}"
    args = ["sample", "syn", "--data-dir", str(syn), "--run", "spop", "--split", "valid", "-k", "20", "--name", name]
    assert main([*args, flag]) == 0, capsys.readouterr().err
    recs = pl.read_parquet(syn / "syn" / "recs" / name / "social-valid" / "recs.parquet")
    splits = friend_lists(syn)
    per_user = recs.group_by("user").agg(pl.col("item").n_unique().alias("distinct"), pl.len())
    assert per_user.height == splits.height and (per_user["distinct"] == 20).all() and (per_user["len"] == 20).all()
    assert recs.filter(pl.col("user") == pl.col("item")).height == 0  # never the user themself
    friends = splits.select("user", pl.col("train").alias("item")).explode("item")
    seen = recs.join(friends, on=["user", "item"]).height
    if exclude:
        assert seen == 0  # no current friend
    else:
        assert seen > 0  # kept: the most-connected users include current friends
        # the first is the most-connected user (degree in the training friend lists, ties by id), or the
        # second for that user themself
        degree = friends.group_by("item").len().sort(["len", "item"], descending=[True, False])["item"].to_list()
        first = recs.filter(pl.col("rank") == 1).sort("user")
        expected = [degree[1] if u == degree[0] else degree[0] for u in first["user"]]
        assert first["item"].to_list() == expected


def test_tiger_social_learns_the_friend_graph(syn: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(syn)]
    assert main(["train-rec", "syn", *TIGER, "--ids", "users", "--run", "st", *d]) == 0, capsys.readouterr().err
    manifest = json.loads((syn / "syn" / "runs" / "st" / "manifest.json").read_text())
    assert manifest["stats"]["view"] == "social" and manifest["stats"]["items"] == 200
    assert manifest["config"]["view"] == "social"
    meta = json.loads((syn / "syn" / "runs" / "st" / "model.json").read_text())["meta"]
    assert meta["view"] == "social" and meta["ids"] == "users"

    for run in ("st", "spop"):
        assert main(["sample", "syn", "--run", run, "--split", "valid", "-k", "10", "--name", f"{run}-v", *d]) == 0
    recs = pl.read_parquet(syn / "syn" / "recs" / "st-v" / "social-valid" / "recs.parquet")
    assert recs.filter(pl.col("user") == pl.col("item")).height == 0
    assert (recs.group_by("user").agg(pl.col("item").n_unique())["item"] == 10).all()
    capsys.readouterr()
    runs = ["--run", "st-v", "--run", "spop-v"]
    assert main(["evaluate", "syn", "--view", "social", "--split", "valid", "--json", *runs, *d]) == 0
    got = metrics_json(capsys.readouterr().out)
    tiger, pop = got["st-v"]["ndcg@10"], got["spop-v"]["ndcg@10"]
    # validation during training excluded the user themself exactly as sample does
    assert tiger == pytest.approx(manifest["stats"]["best_val_ndcg@10"], abs=1e-5)
    assert tiger >= 2 * pop, f"tiger social NDCG@10 {tiger:.4f} < 2 x social popularity {pop:.4f}"


def test_bad_social_inputs_are_one_line(syn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(args: list[str], *needles: str) -> None:
        capsys.readouterr()
        assert main(args) != 0
        line = error_line(capsys.readouterr().err)
        for needle in needles:
            assert needle in line, line

    d = ["--data-dir", str(syn)]
    fails(
        ["train-rec", "syn", *TIGER, "--ids", "items", "--run", "bad", *d],
        "ID set 'items' is for the item view, not social",
    )
    fails(
        ["train-rec", "syn", "--model", "tiger", "--ids", "users", "--run", "bad", *d],
        "is for the social view, not item",
    )
    fails(
        ["train-rec", "syn", "--model", "tiger", "--view", "social", "--run", "bad", *d],
        "needs an ID set",
        "--view social",
    )
    fails(["train-rec", "syn", "--model", "pop", "--view", "friends", *d], "view")
    assert not (syn / "syn" / "runs" / "bad").exists()

    lone = ["--data-dir", str(tmp_path)]
    assert main(["preprocess", "synthetic", "--name", "lone", "--set", "synthetic.users=40", "--set", "synthetic.items=20",
                 "--set", "synthetic.friends=0", *lone]) == 0  # fmt: skip
    for args in (
        ["train-rec", "lone", "--model", "pop", "--view", "social"],
        ["train-rec", "lone", "--model", "tiger", "--view", "social", "--ids", "x"],
        ["evaluate", "lone", "--view", "social"],
        ["build-ids", "lone", "--view", "social"],
    ):
        fails([*args, *lone], "has no social graph", "lastfm-2k", "friend_sequence.txt", "synthetic.friends")
    assert not (tmp_path / "lone" / "runs").exists()
