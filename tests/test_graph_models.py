"""DiffNet / DiffNet++ and DiffKG: layers against dense matrices, graphs without held-out edges, bad input,
and learning on synthetic data (validation NDCG@10 above popularity's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gdr_cli.app import main
from gdr_cli.errors import GdrError
from gdr_cli.paths import DataPaths
from stages.data.views import view_splits
from stages.inputs import open_processed
from stages.models.diffkg import Diffkg, info_nce
from stages.models.diffnet import Diffnet, social_edges
from stages.models.family import FamilyData
from stages.models.graph import mean_aggregate
from stages.samplers.base import SamplerOptions
from tests.test_preprocess import FIX, fixture_path


def gdr(*args: str) -> int:
    return main(list(args))


def dense_mean(edges: list[tuple[int, int]], n_dst: int, n_src: int) -> torch.Tensor:
    """Row-normalised adjacency: A[d, s] = 1 / deg(d) for every edge (d <- s), by hand."""
    a = torch.zeros(n_dst, n_src)
    for d, s in edges:
        a[d, s] += 1.0
    return a / a.sum(1, keepdim=True).clamp(min=1)


SOCIAL = [(0, 1), (1, 0), (0, 2), (2, 0), (1, 3), (3, 1)]  # (user, friend); user 4 has none
INTER = [(0, 0), (0, 2), (1, 1), (2, 2), (3, 0), (4, 1)]  # (user, item)


def small_diffnet(interest: bool) -> Diffnet:
    model = Diffnet(n_users=5, n_items=3, n_social=len(SOCIAL), n_interactions=len(INTER), d_model=4, n_layers=2,
                    interest_diffusion=interest, seed=3)  # fmt: skip
    model.set_graphs(torch.tensor(SOCIAL).T, torch.tensor(INTER).T)
    return model


def test_diffnet_layer_matches_dense_computation() -> None:
    model = small_diffnet(interest=False)
    h = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    s = dense_mean(SOCIAL, 5, 5)  # user 4: a zero row (no friends)
    w, b = model.layers[0].weight, model.layers[0].bias  # [4, 8]: [pooled ; self]
    expected = torch.relu((s @ h) @ w[:, :4].T + h @ w[:, 4:].T + b)
    assert torch.allclose(model.diffuse(h, 0), expected, atol=1e-6)
    # whole model: two layers, then + mean of the user's items; scores are dot products with the items
    q = model.item_emb.weight
    h1 = torch.relu((s @ model.user_emb.weight) @ w[:, :4].T + model.user_emb.weight @ w[:, 4:].T + b)
    w1, b1 = model.layers[1].weight, model.layers[1].bias
    h2 = torch.relu((s @ h1) @ w1[:, :4].T + h1 @ w1[:, 4:].T + b1)
    u = h2 + dense_mean(INTER, 5, 3) @ q
    got_u, got_q = model.vectors()
    assert torch.allclose(got_u, u, atol=1e-6) and torch.equal(got_q, q)


def test_diffnet_plus_plus_layer_matches_dense_computation() -> None:
    model = small_diffnet(interest=True)
    gen = torch.Generator().manual_seed(1)
    h, v = torch.randn(5, 4, generator=gen), torch.randn(3, 4, generator=gen)
    soc, ui, iu = (
        dense_mean(SOCIAL, 5, 5) @ h,
        dense_mean(INTER, 5, 3) @ v,
        dense_mean([(i, u) for u, i in INTER], 3, 5) @ h,
    )
    w, b = model.layers[0].weight[0], model.layers[0].bias[0]
    score = torch.stack([torch.cat([h, soc], 1) @ w + b, torch.cat([h, ui], 1) @ w + b], 1)
    g = torch.softmax(score, 1)
    got_h, got_v = model.interest_layer(h, v, 0)
    assert torch.allclose(got_h, h + g[:, :1] * soc + g[:, 1:] * ui, atol=1e-6)
    assert torch.allclose(got_v, v + iu, atol=1e-6)
    u, items = model.vectors()
    assert u.shape == (5, 12) and items.shape == (3, 12)  # layers 0..2 concatenated


def test_mean_aggregate_is_row_normalised_adjacency() -> None:
    h = torch.arange(15.0).view(5, 3)
    edges = torch.tensor(SOCIAL).T
    assert torch.allclose(mean_aggregate(h, edges[1], edges[0], 5), dense_mean(SOCIAL, 5, 5) @ h)


def test_recommend_needs_user_ids_and_returns_k_distinct() -> None:
    model = small_diffnet(interest=False).eval()
    with pytest.raises(GdrError, match="scores users by ID"):
        model.recommend(torch.full((2, 3), -1), k=2)
    items, scores = model.recommend(torch.full((2, 3), -1), k=5, options=SamplerOptions(users=torch.tensor([0, 4])),
                                    exclude=torch.tensor([[0, -1], [-1, -1]]))  # fmt: skip
    assert items[0].tolist()[:2] != [0, 0] and 0 not in items[0].tolist()
    assert (items[:, 3:] == -1).all() and sorted(items[1, :3].tolist()) == [0, 1, 2]
    u, q = model.vectors()
    assert torch.allclose(scores[1, 0], (u[4] @ q.T).max())


def test_social_view_graph_has_no_held_out_friendship(tmp_path: Path) -> None:
    """Fixture friendships 1-2 1-3 1-4 2-3 3-4 (ids 0-1 0-2 0-3 1-2 2-3); split user 0: train [1], valid 2, test 3
    (user 2 is dropped: its only training friend 0 is held out by 0). Held out in either direction: 0-2 0-3;
    left: 0-1 1-2 2-3."""
    gdr("preprocess", "lastfm-2k", "--input", str(fixture_path("lastfm", tmp_path)), "--name", "fm", "--min-user", "0",
        "--min-item", "0", "--data-dir", str(tmp_path))  # fmt: skip
    processed = open_processed(DataPaths(tmp_path, "fm"))
    data = FamilyData(
        splits=view_splits(processed, "social"), n_items=4, max_len=8, seed=0, view="social", processed=processed
    )
    assert sorted(map(tuple, social_edges(data).T.tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]
    data.view, data.splits = "item", view_splits(processed, "item")
    assert social_edges(data).shape == (2, 10)  # the item view diffuses over every friendship


def test_diffkg_rows_and_denoised_graph() -> None:
    kg = torch.tensor([[0, 0, 1, 2, 2, 2], [0, 2, 1, 0, 1, 2]])  # (item, entity), sorted by item
    model = Diffkg(n_users=2, n_items=4, n_entities=3, n_relations=2, n_kg=6, n_interactions=3, d_model=4, hidden=8,
                   keep=2, seed=0)  # fmt: skip
    model.set_graphs(kg, torch.tensor([0, 0, 1]), torch.tensor([[0, 0, 1], [0, 1, 2]]))
    assert model.rows(torch.tensor([2, 0, 3])).tolist() == [[1, 1, 1], [1, 0, 1], [0, 0, 0]]
    assert model.denoised.tolist() == [[0, 2], [1, -1], [0, 1], [-1, -1]]  # the first `keep` entities of each item
    model.refresh()
    assert (model.denoised >= 0).all() and all(len(set(r)) == 2 for r in model.denoised.tolist())
    # the item vector of the original view: Q + mean of Ent * Rel over the item's edges (no dropout in eval)
    model.eval()
    e, r = model.entity_emb.weight, model.relation_emb.weight
    items0 = model.knowledge_items(kg[0], kg[1])
    assert torch.allclose(items0[0], model.item_emb.weight[0] + (e[0] * r[0] + e[2] * r[1]) / 2, atol=1e-6)
    assert torch.equal(items0[3], model.item_emb.weight[3])
    a = torch.eye(3)
    assert info_nce(a, a, 0.1) < info_nce(a, a.flip(0), 0.1)


@pytest.fixture(scope="module")
def syn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("syn")
    assert gdr("preprocess", "synthetic", "--name", "syn", "--data-dir", str(root), "--config", "tiny") == 0
    assert gdr("train-rec", "syn", "--model", "pop", "--data-dir", str(root)) == 0
    assert (
        gdr("train-rec", "syn", "--model", "pop", "--view", "social", "--run", "pop-social", "--data-dir", str(root))
        == 0
    )
    return root


def val_ndcg(root: Path, run: str, *view: str, capsys: pytest.CaptureFixture[str]) -> float:
    d = ["--data-dir", str(root)]
    assert gdr("sample", "syn", "--run", run, "--split", "valid", *d) == 0
    capsys.readouterr()
    assert gdr("evaluate", "syn", "--run", run, "--split", "valid", *view, "--json", *d) == 0
    return json.loads(capsys.readouterr().out)[run]["ndcg@10"]


@pytest.mark.parametrize(
    ("model", "extra"),
    [("diffnet", []), ("diffnet", ["--interest-diffusion", "--run", "diffnetpp"]), ("diffkg", [])],
)
def test_learns_on_synthetic_data(syn: Path, model: str, extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(syn), "--config", "tiny"]
    assert gdr("train-rec", "syn", "--model", model, *extra, "--epochs", "8", *d) == 0
    run = extra[-1] if extra else model
    assert val_ndcg(syn, run, capsys=capsys) > 1.2 * val_ndcg(syn, "pop", capsys=capsys)


def test_diffnet_social_view_beats_social_popularity(syn: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(syn), "--config", "tiny"]
    assert (
        gdr("train-rec", "syn", "--model", "diffnet", "--view", "social", "--run", "dn-social", "--epochs", "8", *d)
        == 0
    )
    got = val_ndcg(syn, "dn-social", "--view", "social", capsys=capsys)
    assert got > 1.2 * val_ndcg(syn, "pop-social", "--view", "social", capsys=capsys)


def test_missing_social_graph_or_attributes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert (
        gdr(
            "preprocess",
            "movielens-100k",
            "--input",
            str(FIX / "ml-100k"),
            "--name",
            "ml",
            "--min-user",
            "0",
            "--min-item",
            "0",
            *d,
        )
        == 0
    )
    assert (
        gdr(
            "preprocess",
            "sequences",
            "--input",
            str(FIX / "sequences"),
            "--name",
            "seq",
            "--min-user",
            "0",
            "--min-item",
            "0",
            *d,
        )
        == 0
    )
    capsys.readouterr()
    assert gdr("train-rec", "ml", "--model", "diffnet", *d) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no social graph" in err and "lastfm-2k" in err
    assert gdr("train-rec", "seq", "--model", "diffkg", *d) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no item attributes" in err and "kg.parquet" in err
    assert gdr("train-rec", "seq", "--model", "diffkg", "--view", "social", *d) == 2
    assert "not friends" in capsys.readouterr().err
    assert not (tmp_path / "ml" / "runs").exists() and not (tmp_path / "seq" / "runs").exists()


def test_diffnet_run_round_trips(syn: Path) -> None:
    """A run folder alone rebuilds the model: graphs are buffers, so loaded scores equal the trained ones."""
    from stages.models.registry import load_model

    d = ["--data-dir", str(syn), "--config", "tiny"]
    assert gdr("train-rec", "syn", "--model", "diffnet", "--run", "rt", "--epochs", "1", *d) == 0
    model, meta = load_model(syn / "syn" / "runs" / "rt")
    assert model.social.shape[1] > 0 and meta["view"] == "item"
    u, q = model.vectors()
    assert torch.isfinite(u).all() and u.shape[0] == model.n_users and q.shape[0] == model.n_items
