"""Every ID method through the stage on a small synthetic catalogue: unique codes, shapes, vocab
sizes, determinism, hand-computed sequential digits, and no leakage into collaborative codes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_ids_helpers import write_processed

from gdr_cli.paths import DataPaths
from stages import build_ids
from stages.config.build_ids import BuildIdsConfig, EmbedConfig, RQVAEConfig
from stages.ids.codeset import CodeSet, load_codeset
from stages.ids.collab import collab_embeddings
from stages.inputs import open_processed

TINY_VAE = RQVAEConfig(hidden=[32], latent_dim=8, epochs=6, batch_size=32)


def cfg(method: str, **kw) -> BuildIdsConfig:
    kw.setdefault("embed", EmbedConfig(dim=16))
    return BuildIdsConfig(method=method, codebook=8, levels=2, rqvae=TINY_VAE, **kw)


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> DataPaths:
    return write_processed(tmp_path_factory.mktemp("ids"), n_items=40, n_users=60)


@pytest.mark.parametrize("method", ["rqkmeans", "rqvae", "pq", "random", "sequential", "collaborative"])
def test_method_codes_are_unique_sized_and_deterministic(toy: DataPaths, method: str) -> None:
    m1 = build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=cfg(method), ids=f"{method}-a")
    m2 = build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=cfg(method), ids=f"{method}-b")
    a, b = CodeSet.load(toy.ids(f"{method}-a")), CodeSet.load(toy.ids(f"{method}-b"))
    assert a.codes.shape == (40, 3) and a.n_digits == 3 == m1.stats["n_digits"]
    assert len(np.unique(a.codes, axis=0)) == 40 and m1.stats["collision_rate_after"] == 0.0
    assert a.vocab_sizes[:2] == [8, 8] and a.vocab_sizes[2] == m1.stats["max_collisions"] == m1.stats["vocab_sizes"][2]
    assert np.array_equal(a.codes, b.codes) and m1.stats["usage"] == m2.stats["usage"]
    assert (toy.ids(f"{method}-a") / "usage.png").stat().st_size > 1000
    assert m1.inputs["processed"].stage == "preprocess" and m1.stage == "build_ids"
    cs, _ = load_codeset(toy, f"{method}-a")
    assert np.array_equal(cs.codes, a.codes)


def test_default_name_and_codebook_cap(toy: DataPaths) -> None:
    m = build_ids.run(
        dataset=toy.dataset, data_dir=toy.root, config=BuildIdsConfig(method="random", levels=1, codebook=256)
    )
    assert m.name == "random" and m.stats["codebook_effective"] == 40 and m.stats["codebook_requested"] == 256


def test_random_codes_depend_on_seed(toy: DataPaths) -> None:
    build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=cfg("random", seed=1), ids="r1")
    build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=cfg("random", seed=2), ids="r2")
    assert not np.array_equal(CodeSet.load(toy.ids("r1")).codes, CodeSet.load(toy.ids("r2")).codes)


def test_sequential_codes_are_base_codebook_digits(toy: DataPaths) -> None:
    build_ids.run(
        dataset=toy.dataset,
        data_dir=toy.root,
        config=BuildIdsConfig(method="sequential", codebook=3, levels=4),
        ids="s3",
    )
    codes = CodeSet.load(toy.ids("s3")).codes
    assert codes[26].tolist() == [0, 2, 2, 2, 0]  # 26 = 2·9 + 2·3 + 2
    assert codes[39].tolist() == [1, 1, 1, 0, 0]  # 39 = 1·27 + 1·9 + 1·3 + 0
    assert codes[5].tolist() == [0, 0, 1, 2, 0]
    build_ids.run(
        dataset=toy.dataset,
        data_dir=toy.root,
        config=BuildIdsConfig(method="sequential", codebook=8, levels=3),
        ids="s8",
    )
    assert CodeSet.load(toy.ids("s8")).codes[37].tolist() == [0, 4, 5, 0]  # 37 = 4·8 + 5


def test_text_source_falls_back_to_collab_for_items_without_text(toy: DataPaths) -> None:
    m = build_ids.run(
        dataset=toy.dataset,
        data_dir=toy.root,
        config=cfg("rqkmeans", embed=EmbedConfig(source="text", dim=16)),
        ids="txt",
    )
    assert m.stats["embedding_source"] == "text:tfidf-svd" and m.stats["items_without_text"] == 3
    m = build_ids.run(
        dataset=toy.dataset,
        data_dir=toy.root,
        config=cfg("rqkmeans", embed=EmbedConfig(source="collab", dim=16)),
        ids="col",
    )
    assert m.stats["embedding_source"] == "collab" and "items_without_text" not in m.stats


def test_collaborative_embeddings_ignore_heldout_items(tmp_path: Path) -> None:
    a = write_processed(tmp_path / "a", n_items=40, heldout_shift=0)
    b = write_processed(tmp_path / "b", n_items=40, heldout_shift=7)
    pa, pb = open_processed(a), open_processed(b)
    assert not pa.table("splits")["valid"].equals(pb.table("splits")["valid"])  # held-out items differ
    ea, _ = collab_embeddings(pa.table("splits")["train"], 40, dim=16, window=3, seed=0)
    eb, _ = collab_embeddings(pb.table("splits")["train"], 40, dim=16, window=3, seed=0)
    assert np.array_equal(ea, eb)
    for paths in (a, b):
        build_ids.run(dataset=paths.dataset, data_dir=paths.root, config=cfg("collaborative"))
    assert np.array_equal(CodeSet.load(a.ids("collaborative")).codes, CodeSet.load(b.ids("collaborative")).codes)


def test_social_view_codes_users(toy: DataPaths) -> None:
    m = build_ids.run(dataset=toy.dataset, data_dir=toy.root, config=cfg("rqkmeans", view="social"))
    assert m.name == "rqkmeans-social" and m.stats["view"] == "social"
    cs, _ = load_codeset(toy, "rqkmeans-social", view="social")
    assert cs.key == "user" and cs.n_items == 60 and len(np.unique(cs.codes, axis=0)) == 60
    assert m.stats["embedding_source"] == "social:spectral+collab" and m.stats["friend_edges_train"] > 0
