"""`gdr preprocess`: a raw source -> `<root>/<dataset>/processed/` (ARCHITECTURE.md, Tables).

Reads the source into a raw bundle, cleans it (exact-duplicate drop, k-core, compact ids, time
sort), splits it leave-one-out, restricts and splits the friend graph, builds the item knowledge
graph (`stages/data/kg.py`) from the source's item attributes, and writes every table
through a staged folder with the manifest last, so a failed run leaves the old folder intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.table import Table

from gdr_cli.console import console, progress
from gdr_cli.io import staged_dir, write_parquet
from gdr_cli.manifest import Manifest, Stopwatch, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.preprocess import PreprocessConfig
from stages.data.clean import Clean, clean
from stages.data.kg import kg_stats, kg_table
from stages.data.sources import default_name, read_source
from stages.data.split import leave_one_out, social_graph, social_leave_one_out

STEPS = ("read", "clean", "split", "social + kg", "write")


def item_table(cl: Clean, raw_items: pl.DataFrame | None) -> pl.DataFrame:
    """item:int32, raw_id:str, text:str (null where the source has no text for the item)."""
    if raw_items is None:
        return cl.items.with_columns(pl.lit(None, pl.String).alias("text"))
    texts = raw_items.select(pl.col("raw_id").cast(pl.String), pl.col("text").cast(pl.String)).unique(
        "raw_id", keep="first", maintain_order=True
    )
    return cl.items.join(texts, on="raw_id", how="left", maintain_order="left")


def dataset_stats(cl: Clean, splits: pl.DataFrame, social: pl.DataFrame, social_splits: pl.DataFrame) -> dict[str, Any]:
    n_users, n_items, n = cl.users.height, cl.items.height, cl.interactions.height
    lengths = np.bincount(cl.interactions["user"].to_numpy(), minlength=n_users)
    p50, p90, p99 = (int(np.percentile(lengths, q, method="nearest")) for q in (50, 90, 99))
    return {
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "density": round(n / (n_users * n_items), 6),
        "seq_len_p50": p50,
        "seq_len_p90": p90,
        "seq_len_p99": p99,
        "seq_len_max": int(lengths.max()),
        "raw_rows": cl.raw_rows,
        "duplicates_dropped": cl.duplicates,
        "split_users": splits.height,
        "social_edges": social.height // 2,
        "social_users": int(social["user"].n_unique()),
        "social_split_users": social_splits.height,
    }


def show(dataset: str, stats: dict[str, Any]) -> None:
    table = Table(title=f"processed {dataset}", show_header=True, header_style="bold")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        table.add_row(key.replace("_", " "), f"{value:,}" if isinstance(value, int) else f"{value:.6f}")
    console.print(table)


def run(
    *,
    source: str,
    data_dir: Path,
    config: PreprocessConfig,
    input: Path | None = None,
    name: str | None = None,
) -> Manifest:
    """Preprocess `source` (read from `input`, the raw cache or a download) into `<data_dir>/<name>/processed/`."""
    watch = Stopwatch()
    default = default_name(source, config)
    paths = DataPaths(Path(data_dir), name or default)
    cache = DataPaths(Path(data_dir), default).raw
    with progress("step") as bar:
        task = bar.add_task(f"preprocess {paths.dataset}", total=len(STEPS))
        bundle = read_source(
            source, input=Path(input).expanduser() if input is not None else None, config=config, cache=cache
        )
        console.print(f"reading {bundle.origin}")
        bar.advance(task)
        cl = clean(
            bundle, min_user=config.min_user_interactions, min_item=config.min_item_interactions, dedupe=config.dedupe
        )
        bar.advance(task)
        splits = leave_one_out(cl.interactions.select("user", "item"), "item")
        items = item_table(cl, bundle.items)
        bar.advance(task)
        social = social_graph(bundle.social, cl.users)
        social_splits = social_leave_one_out(social)
        kg = kg_table(bundle.attributes, cl.items, cl.users, cl.interactions)
        bar.advance(task)
        stats = {**dataset_stats(cl, splits, social, social_splits), **kg_stats(kg)}
        with staged_dir(paths.processed) as tmp:
            for file, frame in (
                ("interactions", cl.interactions),
                ("items", items),
                ("users", cl.users),
                ("splits", splits),
                ("social", social),
                ("social_splits", social_splits),
                ("kg", kg),
            ):
                write_parquet(tmp / f"{file}.parquet", frame)
            manifest = Manifest(
                stage="preprocess",
                dataset=paths.dataset,
                name=paths.dataset,
                command=command_line(),
                config=dump_config(config),
                seed=config.seed,
                stats={"source": source, "input": bundle.origin, **stats},
                wall_time_s=watch.seconds(),
            )
            write_manifest(tmp, manifest)
        bar.advance(task)
    show(paths.dataset, stats)
    console.print(
        f"preprocessed {source} -> {paths.rel(paths.processed)}: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions, {stats['social_edges']:,} friendships in {watch.seconds():.1f} s"
    )
    return manifest
