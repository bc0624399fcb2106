"""`gdr train-rec`: train a recommender on the training split and write a run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from gdr_cli.console import console
from gdr_cli.io import staged_dir
from gdr_cli.manifest import Manifest, Stopwatch, check_fresh, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.train_rec import TrainRecConfig
from stages.inputs import open_processed
from stages.models.popularity import Popularity
from stages.models.registry import save_model


def run(*, dataset: str, data_dir: Path, config: TrainRecConfig, run_name: str | None = None) -> Manifest:
    """Train `config.model` on `dataset`; returns the manifest of `runs/<run_name>`."""
    clock = Stopwatch()
    paths = DataPaths(data_dir, dataset)
    name = run_name or config.model
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    splits = processed.table("splits")
    train_items = torch.from_numpy(splits["train"].explode().drop_nulls().to_numpy().astype("int64"))
    model = Popularity(n_items=processed.n_items)
    model.fit_counts(train_items)
    stats = {"model": "pop", "train_interactions": int(train_items.numel()), "items": processed.n_items}
    with staged_dir(paths.run(name)) as tmp:
        save_model(tmp, model, meta={"dataset": dataset, "max_len": config.max_len})
        write_manifest(
            tmp,
            Manifest(
                stage="train_rec",
                dataset=dataset,
                name=name,
                command=command_line(),
                config=dump_config(config),
                seed=config.seed,
                inputs={"processed": processed.ref},
                stats=stats,
                wall_time_s=clock.seconds(),
            ),
        )
    console.print(f"train-rec: {name} (pop) on {dataset}: counts from {stats['train_interactions']:,} training interactions -> {paths.run(name)}")
    return Manifest.model_validate_json((paths.run(name) / "manifest.json").read_text())
