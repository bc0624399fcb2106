"""Item vectors from a trained recommender run (`--source run`): the item table it learned.

A sequential recommender trained on the training split (validation only chose its checkpoint) puts
items that are wanted in the same contexts close together; quantising its item table gives codes
whose first digits group the items that model treats alike (ETEGRec and LC-Rec start their
tokenisers from SASRec's item embeddings for the same reason). Any run whose model owns an item
table of this dataset's items works: SASRec, HSTU, DiffuRec.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gdr_cli.errors import GdrError
from stages.ids.vectors import normalize
from stages.inputs import Run
from stages.models.registry import load_model


def run_item_vectors(trained: Run, *, n_items: int, view: str, name: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Unit rows [n_items, d] of run `name`'s learned item table, and stats for the ID manifest."""
    model, meta = load_model(trained.folder)
    table = getattr(model, "item_emb", None)
    where = str(trained.folder)
    if table is None:
        raise GdrError(
            f"run {name!r} is a {model.kind} model, which has no learned item table to build codes from",
            where=where,
            fix="point --from-run at a SASRec, HSTU or DiffuRec run (e.g. `gdr train-rec DATASET --model sasrec "
            "--run sasrec`)",
        )
    run_view = meta.get("view", "item")
    if run_view != view:
        raise GdrError(
            f"run {name!r} recommends in the {run_view} view, but these IDs are for the {view} view",
            where=where,
            fix=f"train a {view}-view run to build {view} IDs from",
        )
    weight = table.weight.detach().float().cpu().numpy()
    padded = getattr(table, "padding_idx", None) == n_items and weight.shape[0] == n_items + 1
    if padded:
        weight = weight[:n_items]  # the last row is the padding token, not an item
    if weight.shape[0] != n_items:
        raise GdrError(
            f"run {name!r} has {weight.shape[0]} item vectors but the dataset has {n_items} items",
            where=where,
            fix="retrain the run on this dataset's current processed data",
        )
    stats = {
        "embedding_source": f"run:{name}",
        "embedding_dim": int(weight.shape[1]),
        "embedding_run_model": model.kind,
    }
    return normalize(weight.astype(np.float32)), stats
