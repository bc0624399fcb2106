"""Item-text embeddings: a local sentence-transformers model when asked for, else TF-IDF -> SVD.

Nothing is downloaded: a named model must already be on disk (or in the Hugging Face cache),
and loading runs with the hub in offline mode.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from gdr_cli.errors import GdrError
from stages.ids.vectors import normalize, svd_embed


def has_text(texts: list[str | None]) -> np.ndarray:
    """[N] bool: the item has non-blank text."""
    return np.fromiter((bool(t and t.strip()) for t in texts), dtype=bool, count=len(texts))


def tfidf_embeddings(texts: list[str], *, dim: int, seed: int) -> np.ndarray:
    """TF-IDF (unigrams + bigrams, sublinear tf) -> seeded truncated SVD -> unit rows [N, dim]."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit_transform(texts)
    except ValueError:  # only stop words / empty vocabulary
        return np.zeros((len(texts), dim), dtype=np.float32)
    return normalize(svd_embed(tfidf, dim, seed))


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def model_embeddings(texts: list[str], embedder: str, *, batch_size: int = 64) -> np.ndarray:
    """Unit rows [N, d] from a local sentence-transformers model; a model that can't load is a GdrError."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise GdrError(
            f"--embedder {embedder!r} needs the sentence-transformers package, which is not installed",
            fix="pip install 'gdr[embed]', or leave --embedder unset to use the built-in TF-IDF embedding",
        ) from None
    try:
        with _offline():
            model = SentenceTransformer(embedder, device="cpu")
    except Exception as exc:  # any loader failure (missing files, bad config) is the user's model choice
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GdrError(
            f"cannot load embedder {embedder!r} locally: {first}",
            fix="give a path to a downloaded sentence-transformers model, or leave --embedder unset for TF-IDF",
        ) from None
    vecs = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return normalize(vecs)
