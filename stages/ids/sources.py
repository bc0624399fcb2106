"""The vectors a semantic-ID method quantises, by source: 'text', 'collab', 'hybrid' (items) or 'social' (users).

Every source reads training data only (`splits.train`, `social_splits.train`); item text is not
interaction data. Returned rows are unit length; the stats say where they came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from gdr_cli.errors import GdrError
from stages.config.build_ids import EmbedConfig
from stages.ids.collab import collab_embeddings
from stages.ids.social import friend_adjacency, interaction_embeddings, spectral_embeddings, user_embeddings
from stages.ids.text import has_text, model_embeddings, tfidf_embeddings
from stages.ids.vectors import normalize
from stages.inputs import Processed


def embed(
    source: str, processed: Processed, cfg: EmbedConfig, *, n: int, seed: int, cache: Path
) -> tuple[np.ndarray, dict[str, Any]]:
    """Unit vectors [n, d] for `source` and stats (source, dim, fallbacks); `cache` holds extracted embedder models."""
    if cfg.embedder and source not in ("text", "hybrid"):
        raise GdrError(
            f"--embedder encodes item text, but the embedding source is {source!r}",
            fix="add --source text (or hybrid), or drop --embedder",
        )
    if source == "text":
        return _text(processed, cfg, n, seed, cache)
    if source == "collab":
        emb, cold = _collab(processed, cfg, n, cfg.dim, seed)
        return emb, {"embedding_source": "collab", "embedding_dim": emb.shape[1], "items_without_train_data": cold}
    if source == "hybrid":
        return _hybrid(processed, cfg, n, seed, cache)
    if source == "social":
        return _social(processed, cfg, n, seed)
    raise GdrError(f"unknown embedding source {source!r}", fix="use --source text, collab or hybrid")


def _collab(
    processed: Processed, cfg: EmbedConfig, n_items: int, dim: int, seed: int, *, fill_empty: bool = True
) -> tuple[np.ndarray, int]:
    train = processed.table("splits")["train"]
    return collab_embeddings(train, n_items, dim=dim, window=cfg.window, seed=seed, fill_empty=fill_empty)


def balance(x: np.ndarray) -> np.ndarray:
    """Rows of x [N, D] scaled to unit length, then the block scaled so the mean squared distance between
    two rows is 1 (so blocks of any dimension or spread weigh the same in k-means); float32."""
    x = normalize(x)
    n = x.shape[0]
    if n < 2:
        return x
    # mean over ordered pairs i != j of |x_i - x_j|^2 = 2 (n·Σ|x_i|^2 - |Σ x_i|^2) / (n (n - 1))
    sq = float(np.square(x).sum())
    spread = 2.0 * (n * sq - float(np.square(x.sum(0, dtype=np.float64)).sum())) / (n * (n - 1))
    return x / np.float32(np.sqrt(spread)) if spread > 0 else x


def _hybrid(
    processed: Processed, cfg: EmbedConfig, n: int, seed: int, cache: Path
) -> tuple[np.ndarray, dict[str, Any]]:
    """[sqrt(1 - w) · text, sqrt(w) · collab], each block balanced (`balance`), w = `collab_weight`; unit rows.

    Items with no training co-occurrence get a zero collab block, so their text alone places them.
    """
    text, stats = _text(processed, cfg, n, seed, cache)
    collab, cold = _collab(processed, cfg, n, cfg.dim, seed, fill_empty=False)
    w = cfg.collab_weight
    emb = np.concatenate([np.sqrt(1 - w) * balance(text), np.sqrt(w) * balance(collab)], axis=1)
    stats = {
        **stats,
        "embedding_source": f"hybrid:{stats['embedding_source']}+collab",
        "embedding_dim": emb.shape[1],
        "collab_weight": w,
        "items_without_train_data": cold,
    }
    return normalize(emb), stats


def _text(processed: Processed, cfg: EmbedConfig, n: int, seed: int, cache: Path) -> tuple[np.ndarray, dict[str, Any]]:
    items = processed.table("items").sort("item")
    texts = items["text"].to_list() if "text" in items.columns else [None] * n
    ok = has_text(texts)
    given = [t for t, o in zip(texts, ok, strict=True) if o]
    if cfg.embedder:
        vecs = model_embeddings(given, cfg.embedder, cache=cache) if given else np.zeros((0, cfg.dim), np.float32)
        how = f"text:{cfg.embedder}"
    else:
        vecs = tfidf_embeddings(given, dim=cfg.dim, seed=seed) if given else np.zeros((0, cfg.dim), np.float32)
        how = "text:tfidf-svd"
    dim = vecs.shape[1]
    emb = np.zeros((n, dim), dtype=np.float32)
    emb[ok] = vecs
    missing = ~ok | (np.linalg.norm(emb, axis=1) == 0)  # no text, or text with no usable words
    cold = 0
    if missing.any():
        collab, cold_all = _collab(processed, cfg, n, dim, seed)
        emb[missing] = collab[missing]
        cold = cold_all
    stats = {
        "embedding_source": how,
        "embedding_dim": dim,
        "items_without_text": int(missing.sum()),
        "text_fallback": "collab" if missing.any() else None,
        "items_without_train_data": cold,
    }
    return emb, stats


def social_splits(processed: Processed) -> pl.DataFrame:
    """The training friend lists; a dataset without a friend graph is a GdrError (the social view needs one)."""
    from stages.data.views import view_splits

    return view_splits(processed, "social")


def _social(processed: Processed, cfg: EmbedConfig, n_users: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    splits = social_splits(processed)
    adj = friend_adjacency(splits["user"].to_numpy(), splits["train"], n_users)
    spectral = spectral_embeddings(adj, dim=cfg.dim, seed=seed)
    n_items = int(processed.table("items").height)
    item_emb, _ = _collab(processed, cfg, n_items, cfg.dim, seed)
    inter = processed.table("splits")
    behaviour = interaction_embeddings(inter["user"].to_numpy(), inter["train"], item_emb, n_users)
    emb = user_embeddings(spectral, behaviour)
    stats = {
        "embedding_source": "social:spectral+collab",
        "embedding_dim": emb.shape[1],
        "friend_edges_train": int(adj.nnz // 2),
        "users_without_friends": int((np.asarray(adj.sum(1)).ravel() == 0).sum()),
    }
    return emb, stats
