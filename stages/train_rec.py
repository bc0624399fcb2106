"""`gdr train-rec`: train a recommender on the training split and write a run folder.

pop:          item counts of the training sequences (no gradient training); in the social view the
              number of training friend lists a user appears in (the most-connected users).
friendpop:    counts among the user's friends in the training friend graph (`stages/models/friendpop.py`):
              friends' training items (item view) or shared friends (social view); ties by popularity.
every other:  a model family (`stages/models/registry.py`) trained by the shared flow
              (`stages/training/flow.py`): examples -> `fit` (validation NDCG@10, early stopping,
              resume, DDP under torchrun) -> runs/<run>/ with the best weights, log, curve, manifest.

`view` 'social' trains on the friend lists (`social_splits.parquet`) with users as the catalogue;
the run's meta records the view, so `sample` and `evaluate` use the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import torch

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import staged_dir
from gdr_cli.manifest import Manifest, Stopwatch, check_fresh, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.train_rec import TrainRecConfig
from stages.data.views import n_entities, view_note, view_splits
from stages.inputs import Processed, open_processed
from stages.models.friendpop import FriendPopularity, unique_edges
from stages.models.popularity import Popularity
from stages.models.registry import model_family, save_model


def run(
    *,
    dataset: str,
    data_dir: Path,
    config: TrainRecConfig,
    run_name: str | None = None,
    resume: bool = False,
    on_validation: Callable[[int, float], None] | None = None,
) -> Manifest | None:
    """Train `config.model` on `dataset`; returns the manifest of `runs/<run_name>` (None on non-primary ranks).
    `on_validation(step, val_ndcg@10)` is called after each validation (`gdr tune` reports and prunes there)."""
    from stages.training.flow import TrainRequest, train_family

    generative = config.model not in ("pop", "friendpop") and model_family(config.model).needs_ids
    if config.ids and not generative:
        raise GdrError(
            f"--ids {config.ids} does not apply to {config.model}: it ranks items directly, without item codes",
            fix="drop --ids (tiger is the train-rec model that reads an ID set)",
        )
    paths = DataPaths(data_dir, dataset)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    name = run_name or config.model
    if config.model in ("pop", "friendpop"):
        return _count(paths, processed, config, name)
    family = model_family(config.model)
    request = TrainRequest(
        stage="train_rec", family=family, section=getattr(config, config.model), train=config.train, stage_config=config,
        ids=config.ids, max_len=config.max_len, seed=config.seed, name=name, resume=resume, view=config.view,
        train_split=config.train_split,
        on_validation=on_validation,
    )  # fmt: skip
    return train_family(paths, processed, request)


def _friend_counts(
    processed: Processed, view: str, splits: pl.DataFrame, train_items: torch.Tensor, n: int
) -> tuple[FriendPopularity, dict[str, int]]:
    """friendpop over the training friend graph: M = the training (user, item) pairs (item view) or the graph
    itself (social view); the tie-break prior = item training counts, or degree in the graph."""
    from stages.models.diffnet import training_friendships
    from stages.models.graph import training_pairs

    n_users = processed.n_users
    raw = training_friendships(processed, view, splits, why="friendpop counts what friends did")
    social = unique_edges(raw[0], raw[1], n_users)
    if view == "social":
        touched = social
        prior = torch.bincount(social[0], minlength=n_users).float()
    else:
        users, items = training_pairs(splits)
        touched = unique_edges(users, items, n)
        prior = torch.bincount(train_items, minlength=n).float()
    model = FriendPopularity(
        n_users=n_users, n_items=n, n_social=social.shape[1], n_touched=touched.shape[1], view=view
    )
    model.fit(social, touched, prior)
    return model, {"social_edges": int(social.shape[1]) // 2, "touched_pairs": int(touched.shape[1])}


def _count(paths: DataPaths, processed: Processed, config: TrainRecConfig, name: str) -> Manifest:
    from stages.augmentation.splits import BASE, open_train_split, split_name

    clock = Stopwatch()
    splits = view_splits(processed, config.view)
    n = n_entities(processed, config.view)
    inputs = {"processed": processed.ref}
    train_split = split_name(config.train_split)
    if train_split != BASE:
        if config.view != "item":
            raise GdrError("an augmented training split holds item sequences, not friend lists",
                           where=f"--train-split {config.train_split}", fix="use --view item, or drop --train-split")  # fmt: skip
        chosen = open_train_split(paths, processed, config.train_split)
        splits = chosen.splits
        inputs["train_split"] = chosen.ref  # type: ignore[assignment]
    train_items = torch.from_numpy(splits["train"].explode().drop_nulls().to_numpy().astype("int64"))
    stats = {
        "model": config.model,
        "view": config.view,
        "train_split": train_split,
        "params": 0,
        "train_interactions": int(train_items.numel()),
        "items": n,
    }
    if config.model == "friendpop":
        model, extra = _friend_counts(processed, config.view, splits, train_items, n)
        stats.update(extra)
    else:
        model = Popularity(n_items=n)
        model.fit_counts(train_items)
    with staged_dir(paths.run(name)) as tmp:
        save_model(tmp, model, meta={"dataset": paths.dataset, "max_len": config.max_len or 20, "view": config.view,
                                        "train_split": train_split})  # fmt: skip
        write_manifest(
            tmp,
            Manifest(
                stage="train_rec", dataset=paths.dataset, name=name, command=command_line(), config=dump_config(config),
                seed=config.seed, inputs=inputs, stats=stats, wall_time_s=clock.seconds(),
            ),
        )  # fmt: skip
    what = "friendships" if config.view == "social" else "interactions"
    console.print(
        f"train-rec: {name} ({config.model}) on {paths.dataset}{view_note(config.view)}: counts from "
        f"{stats['train_interactions']:,} training {what} -> {paths.run(name)}"
    )
    return Manifest.model_validate_json((paths.run(name) / "manifest.json").read_text())
