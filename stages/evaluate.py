"""`gdr evaluate`: Recall/NDCG/MRR@K of sampled recommendations, one table for many runs.

For each recommendations folder `recs/<name>/<split>/` (all of them by default) it checks the
manifest is fresh, scores the table against the split's held-out item (PROTOCOL.md §1), writes
`metrics/<name>/<split>/metrics.json` (+ manifest), then prints a comparison table and writes
`reports/<split>-comparison.{parquet,md,png}`. This is the only stage that reads test targets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from gdr_cli.console import console, stdout
from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_path, atomic_write_json, atomic_write_text, staged_dir, write_parquet
from gdr_cli.manifest import (
    Manifest,
    Stopwatch,
    check_fresh,
    command_line,
    dump_config,
    input_ref,
    read_manifest,
    write_manifest,
)
from gdr_cli.paths import DataPaths
from stages.config.evaluate import EvaluateConfig
from stages.inputs import open_processed
from stages.metrics.report import comparison_table, plot_comparison, render_markdown
from stages.metrics.scoring import score_recs


def available_recs(paths: DataPaths, split: str) -> list[str]:
    """Names of every recommendations folder with a manifest for `split`, sorted by name."""
    root = paths.home / "recs"
    if not root.exists():
        return []
    return sorted(p.parent.parent.name for p in root.glob(f"*/{split}/manifest.json") if not p.parent.parent.name.startswith("."))


def evaluate_one(paths: DataPaths, name: str, config: EvaluateConfig, targets: pl.DataFrame, processed_ref: Any) -> dict[str, Any]:
    clock = Stopwatch()
    folder = paths.recs(name, config.split)
    manifest = read_manifest(
        folder,
        what=f"{config.split} recommendations {name!r}",
        fix=f"run `gdr sample {paths.dataset} --run {name} --split {config.split}` first",
    )
    check_fresh(manifest, paths.root, what=f"recommendations {name!r}")
    try:
        recs = pl.read_parquet(folder / "recs.parquet")
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise GdrError(f"unreadable recommendations: {exc}", where=str(folder), fix=f"rerun `{manifest.command}`") from None
    metrics = score_recs(recs, targets, config.ks)
    metrics["exclude_history"] = bool(manifest.config.get("exclude_history", False))
    metrics["sampler"] = manifest.stats.get("sampler")
    for key in ("users_per_s", "nfe_per_user"):
        if key in manifest.stats:
            metrics[key] = manifest.stats[key]
    out = paths.metrics(name, config.split)
    with staged_dir(out) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        write_manifest(
            tmp,
            Manifest(
                stage="evaluate",
                dataset=paths.dataset,
                name=name,
                command=command_line(),
                config=dump_config(config),
                inputs={"recs": input_ref(folder, paths.root, manifest), "processed": processed_ref},
                stats={k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)},
                wall_time_s=clock.seconds(),
            ),
        )
    return metrics


def run(
    *, dataset: str, data_dir: Path, config: EvaluateConfig, runs: list[str] | None = None, as_json: bool = False
) -> dict[str, dict[str, Any]]:
    """Score `runs` (default: every recommendations folder of the split); returns name -> metrics."""
    paths = DataPaths(data_dir, dataset)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    names = runs or available_recs(paths, config.split)
    if not names:
        raise GdrError(
            f"no {config.split} recommendations to evaluate for dataset {dataset!r}",
            fix=f"run `gdr sample {dataset} --run NAME --split {config.split}` first",
        )
    splits = processed.table("splits")
    targets = splits.select("user", pl.col(config.split).alias("target"))
    results = {name: evaluate_one(paths, name, config, targets, processed.ref) for name in names}

    table = comparison_table(results, config.ks)
    paths.reports.mkdir(parents=True, exist_ok=True)
    stem = paths.reports / f"{config.split}-comparison"
    write_parquet(stem.with_suffix(".parquet"), table)
    atomic_write_text(stem.with_suffix(".md"), render_markdown(table, dataset=dataset, split=config.split))
    if config.plot:
        with atomic_path(stem.with_suffix(".png")) as tmp:
            plot_comparison(table, config.ks, tmp, title=f"{dataset} · {config.split}")
    if as_json:
        stdout.print_json(json.dumps(results))
    else:
        from stages.metrics.report import rich_table

        console.print(rich_table(table, config.ks, title=f"{dataset} · {config.split} · {targets.height:,} users"))
    best = max(results, key=lambda n: results[n].get("ndcg@10", 0.0))
    console.print(f"evaluate: {len(results)} run(s) on {config.split}; best NDCG@10 {results[best].get('ndcg@10', 0):.4f} ({best}) -> {stem}.md")
    return results
