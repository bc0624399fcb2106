"""`gdr augment`: an augmented training split with diffusion-generated pseudo items (DiffuASR).

Reads the base split (or `config.base`, an earlier augmented one), trains the DiffuASR diffusion
model on its training sequences (`stages/augmentation/diffuasr.py`), generates `num_pseudo` items for
every training sequence shorter than `min_len` and prepends them, and writes
`augmented/<name>/`: splits.parquet (same schema and users as the base; `train` longer for the
augmented users; `valid` and `test` copied unchanged), pseudo.parquet (user, pseudo: the items
added) and a manifest naming the base split. Any `train-rec --model` and `gdr diffuse` train on it
with `--train-split augmented/<name>`; validation and test histories stay the base split's.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import staged_dir, write_parquet
from gdr_cli.manifest import Manifest, Stopwatch, check_fresh, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.augmentation.diffuasr import DiffuasrNet, nearest_unseen, train_diffuasr
from stages.augmentation.splits import BASE, PREFIX, open_train_split, split_name
from stages.config.augment import AugmentConfig
from stages.data.sequences import eval_histories, leading_items, training_examples, training_futures
from stages.inputs import open_processed

RESERVED = (BASE, "processed")
"""Names that denote the base split: an augmented split may never take them."""

GENERATE_BATCH = 256
"""Users per generation batch."""


def run(*, dataset: str, data_dir: Path, config: AugmentConfig, name: str | None = None) -> Manifest:
    """Write `augmented/<name>` (default: the method) for `dataset`; returns its manifest."""
    clock = Stopwatch()
    paths = DataPaths(Path(data_dir), dataset)
    name = name or config.method
    base_name = split_name(config.base)
    if name in RESERVED or base_name == f"{PREFIX}{name}":
        what = "the base split" if name in RESERVED else f"its base split {base_name!r}"
        raise GdrError(f"augmentation would write over {what}", where=f"--name {name}",
                       fix="choose another --name; a base split is never overwritten")  # fmt: skip
    folder = paths.augmented(name)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    base = open_train_split(paths, processed, config.base)
    splits = base.splits
    cfg = config.diffuasr

    net = DiffuasrNet(n_items=processed.n_items, num_pseudo=config.num_pseudo, cfg=cfg, seed=config.seed)
    ex = training_examples(splits, config.num_pseudo)
    block = ex["history"]  # [N, M]: the up-to-M items before position i (left-padded)
    guide = training_futures(splits, cfg.guide_len)  # [N, G]: items i.. (the block's future)
    if block.shape[0] == 0:
        raise GdrError("no training sequence has two items to learn from", where=str(processed.folder),
                       fix="preprocess with more interactions per user")  # fmt: skip
    losses = train_diffuasr(net, block, guide, cfg=cfg, seed=config.seed)

    lengths = splits["train"].list.len()
    short = (lengths < config.min_len).to_numpy()
    rows = torch.from_numpy(short.nonzero()[0])
    pseudo = generate(net, splits, rows, config)  # [S, M]
    users = splits["user"].to_numpy()[short]
    added = pl.DataFrame(
        {"user": users, "pseudo": pseudo.tolist()}, schema={"user": pl.Int32, "pseudo": pl.List(pl.Int32)}
    ).with_columns(pl.col("pseudo").list.eval(pl.element().filter(pl.element() >= 0)))
    out = (
        splits.join(added, on="user", how="left", maintain_order="left")
        .with_columns(train=pl.concat_list([pl.col("pseudo").fill_null(pl.lit([], dtype=pl.List(pl.Int32))), pl.col("train")]))
        .select(splits.columns)
    )  # fmt: skip
    n_added = int(added["pseudo"].list.len().sum() or 0)
    stats = {
        "method": config.method, "base_split": base_name, "users": splits.height, "users_augmented": int(short.sum()),
        "pseudo_items": n_added, "train_items_before": int(lengths.sum()), "train_items_after": int(lengths.sum()) + n_added,
        "diffusion_examples": int(block.shape[0]), "train_loss_per_epoch": [round(x, 4) for x in losses],
    }  # fmt: skip
    inputs = {"processed": processed.ref}
    if base.ref is not None:
        inputs["base"] = base.ref
    with staged_dir(folder) as tmp:
        write_parquet(tmp / "splits.parquet", out)
        write_parquet(tmp / "pseudo.parquet", added)
        write_manifest(
            tmp,
            Manifest(
                stage="augment", dataset=paths.dataset, name=name, command=command_line(), config=dump_config(config),
                seed=config.seed, inputs=inputs, stats=stats, wall_time_s=clock.seconds(),
            ),
        )  # fmt: skip
    console.print(
        f"augment: {name} ({config.method}) on {paths.dataset}: {n_added:,} pseudo items for {stats['users_augmented']:,} of "
        f"{splits.height:,} users (training sequences < {config.min_len} items; base {base_name}) -> {folder}"
    )
    return Manifest.model_validate_json((folder / "manifest.json").read_text())


def generate(net: DiffuasrNet, splits: pl.DataFrame, rows: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """Pseudo items [S, M] for the users at table rows `rows` [S]: generated from their first guide_len items,
    never an item of their training sequence, no item twice (-1 where the catalogue is exhausted)."""
    if rows.numel() == 0:
        return torch.empty(0, config.num_pseudo, dtype=torch.int64)
    longest = int(splits["train"].list.len().max() or 1)
    seen = eval_histories(splits, "valid", longest, with_target=False)["history"][rows]  # [S, longest] train items
    guide = leading_items(splits, config.diffuasr.guide_len)[rows]
    gen = torch.Generator().manual_seed(config.seed + 1)
    items = net.catalogue().detach()
    parts = []
    for start in range(0, len(rows), GENERATE_BATCH):  # batches of users, each vectorised
        part = slice(start, start + GENERATE_BATCH)
        parts.append(nearest_unseen(net.generate(guide[part], gen), items, seen[part]))
    return torch.cat(parts)
