"""A seeded synthetic dataset with learnable sequential, popularity, text and social structure.

Items fall into clusters (topics) and have Zipf popularity within their cluster. Each user has
a home cluster and walks a Markov chain over clusters: stay (prob `stay`), move to the next
cluster (c+1 mod C), return home, or jump anywhere; each step emits a popular-leaning item of
the current cluster. Item text is words from the cluster's vocabulary (plus some noise words).
Friends are drawn mostly from the same home cluster (homophily), so communities share tastes.
The item attributes (knowledge graph) are the words of the item's text (relation 'word').
Everything is vectorised over users; the only loop runs over sequence positions.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from stages.config.preprocess import SyntheticConfig

SYLLABLES = np.array(["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qui", "dor", "fen", "gal", "hu", "jas"])
WORDS_PER_CLUSTER = 12
NOISE_WORDS = 0.2


def _item_keys(n_items: int, n_clusters: int, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items ordered by (cluster, popularity rank) and their sampling keys cluster + within-cluster CDF.

    Returns (item ids in that order [I] int64, keys [I] float64, increasing: cluster c owns (c, c+1],
    their clusters [I] int64).
    """
    cluster = rng.permutation(np.arange(n_items) % n_clusters)  # balanced random assignment
    order = np.lexsort((rng.random(n_items), cluster))  # random popularity rank within cluster
    cl = cluster[order]
    starts = np.searchsorted(cl, np.arange(n_clusters))
    rank = np.arange(n_items) - starts[cl]
    weight = 1.0 / (rank + 1.0) ** alpha
    cum = np.cumsum(weight)
    before = np.concatenate([[0.0], cum])[starts][cl]  # cumulative weight of earlier clusters
    total = np.bincount(cl, weights=weight, minlength=n_clusters)[cl]
    keys = cl + (cum - before) / total
    keys[np.r_[starts[1:] - 1, n_items - 1]] = np.arange(n_clusters) + 1.0  # exact upper ends
    return order, keys, cl


def _lengths(cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """Long-tailed sequence lengths with mean ~`mean_len`, clipped to [min_len, max_len].  # [U] int64"""
    a = 2.5  # Lomax tail exponent: heavy but with a finite mean
    extra = max(cfg.mean_len - cfg.min_len, 0.0) * (a - 1) * rng.pareto(a, size=cfg.users)
    return np.clip(cfg.min_len + np.floor(extra), cfg.min_len, max(cfg.min_len, cfg.max_len)).astype(np.int64)


def _walks(cfg: SyntheticConfig, home: np.ndarray, lengths: np.ndarray, items: np.ndarray, keys: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, timestamp) rows of every user's walk, user-major and in time order."""
    C = cfg.clusters
    cur = home.copy()
    clock = 1_500_000_000 + rng.integers(0, 86_400 * 365, size=cfg.users)
    users, picks, stamps = [], [], []
    for t in range(int(lengths.max())):
        act = np.flatnonzero(lengths > t)  # users still walking at position t
        if t > 0:
            r = rng.random(act.size)
            move = 1.0 - cfg.stay
            nxt = np.where(r < cfg.stay, cur[act], (cur[act] + 1) % C)
            nxt = np.where(r >= cfg.stay + 0.6 * move, home[act], nxt)
            nxt = np.where(r >= cfg.stay + 0.85 * move, rng.integers(0, C, size=act.size), nxt)
            cur[act] = nxt
        pos = np.searchsorted(keys, cur[act] + rng.random(act.size), side="right")
        clock[act] += rng.integers(60, 86_400, size=act.size)
        users.append(act)
        picks.append(items[np.minimum(pos, items.size - 1)])
        stamps.append(clock[act].copy())
    user, item, ts = np.concatenate(users), np.concatenate(picks), np.concatenate(stamps)
    order = np.argsort(user, kind="stable")  # user-major; positions were appended in time order
    return user[order], item[order], ts[order]


def _friends(cfg: SyntheticConfig, home: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Directed friend edges (symmetrised later), mostly within the home cluster.  # [E], [E]"""
    n_edges = rng.poisson(cfg.friends / 2.0, size=cfg.users)
    src = np.repeat(np.arange(cfg.users), n_edges)
    by_home = np.argsort(home, kind="stable")
    start = np.searchsorted(home[by_home], np.arange(cfg.clusters))
    size = np.bincount(home, minlength=cfg.clusters)
    local = by_home[start[home[src]] + np.floor(rng.random(src.size) * size[home[src]]).astype(np.int64)]
    anyone = rng.integers(0, cfg.users, size=src.size)
    dst = np.where(rng.random(src.size) < cfg.homophily, local, anyone)
    return src, dst


def _texts(cfg: SyntheticConfig, cluster_of: np.ndarray, rng: np.random.Generator) -> list[str]:
    """`words` words per item, from its cluster's vocabulary (80%) or anywhere (20%)."""
    n_vocab = cfg.clusters * WORDS_PER_CLUSTER
    s = SYLLABLES.size
    idx = np.arange(n_vocab)
    vocab = np.char.add(np.char.add(SYLLABLES[idx % s], SYLLABLES[(idx // s) % s]), SYLLABLES[(idx // s // s) % s])
    vocab = np.char.add(vocab, np.where(idx >= s**3, (idx // s**3).astype(str), ""))
    n = cluster_of.size
    own = cluster_of[:, None] * WORDS_PER_CLUSTER + rng.integers(0, WORDS_PER_CLUSTER, size=(n, cfg.words))
    noise = rng.integers(0, n_vocab, size=(n, cfg.words))
    words = vocab[np.where(rng.random((n, cfg.words)) < NOISE_WORDS, noise, own)]
    frame = pl.DataFrame({f"w{j}": words[:, j] for j in range(cfg.words)})
    return frame.select(pl.concat_str(pl.all(), separator=" ")).to_series().to_list()


def attributes(items: pl.DataFrame) -> pl.DataFrame:
    """Item -> word edges (raw_id, relation 'word', entity) of the generated item texts (words of the
    item's cluster vocabulary, some noise): the synthetic knowledge graph."""
    return items.select(
        "raw_id", pl.lit("word").alias("relation"), pl.col("text").str.split(" ").alias("entity")
    ).explode("entity")


def generate(cfg: SyntheticConfig, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(interactions user/item/timestamp, items raw_id/text, social user/friend) as raw string ids."""
    rng = np.random.default_rng(seed)
    items, keys, clusters = _item_keys(cfg.items, cfg.clusters, cfg.popularity, rng)
    cluster_of = np.empty(cfg.items, dtype=np.int64)
    cluster_of[items] = clusters
    home = rng.integers(0, cfg.clusters, size=cfg.users)
    user, item, ts = _walks(cfg, home, _lengths(cfg, rng), items, keys, rng)
    src, dst = _friends(cfg, home, rng)
    uid = np.char.add("u", np.arange(cfg.users).astype(str))
    iid = np.char.add("i", np.arange(cfg.items).astype(str))
    inter = pl.DataFrame({"user": uid[user], "item": iid[item], "timestamp": ts.astype(np.int64)})
    item_table = pl.DataFrame({"raw_id": iid, "text": _texts(cfg, cluster_of, rng)})
    social = pl.DataFrame({"user": uid[src], "friend": uid[dst]}, schema={"user": pl.String, "friend": pl.String})
    return inter, item_table, social
