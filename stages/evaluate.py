"""`gdr evaluate`: Recall/NDCG/MRR@K of sampled recommendations, one comparison for many runs.

For each recommendations folder `recs/<name>/<split>/` (all of them by default) it checks the
manifest is fresh, scores the table against the split's held-out item (PROTOCOL.md §1) and writes
`metrics/<name>/<split>/` (metrics.json, ranks.parquet = each user's target rank, manifest).
Then it writes the comparison folder `reports/<split>/` (staged, manifest last): comparison.parquet,
comparison.md and metrics.png; with `--report` also bootstrap intervals, paired p-values against
the best run (pairwise.parquet), training curves (curves.png) and a self-contained report.html.
This is the only stage that reads test targets.

`view` 'social' scores friend recommendations against `social_splits.parquet`: it reads
`recs/<name>/social-<split>/` and writes `metrics/<name>/social-<split>/` and
`reports/social-<split>/`, so a comparison never mixes item-view and social-view runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from gdr_cli.console import console, progress, stdout
from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_write_bytes, atomic_write_json, atomic_write_text, staged_dir, write_parquet
from gdr_cli.manifest import (
    InputRef,
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
from stages.data.views import split_folder, view_note, view_splits
from stages.inputs import open_processed
from stages.metrics.compare import against_best, compare_runs
from stages.metrics.report import comparison_table, render_html, render_markdown, rich_table
from stages.metrics.scoring import RankedTargets, rank_targets, summarize


@dataclass
class Scored:
    """One evaluated recommendations folder: its metrics, per-user ranks and provenance."""

    name: str
    metrics: dict[str, Any]
    ranked: RankedTargets
    recs: Manifest
    ref: InputRef  # of the metrics folder just written


def available_recs(paths: DataPaths, split: str) -> list[str]:
    """Names of every recommendations folder with a manifest for `split`, sorted by name."""
    root = paths.home / "recs"
    if not root.exists():
        return []
    return sorted(
        p.parent.parent.name for p in root.glob(f"*/{split}/manifest.json") if not p.parent.parent.name.startswith(".")
    )


def evaluate_one(
    paths: DataPaths, name: str, config: EvaluateConfig, targets: pl.DataFrame, processed_ref: InputRef
) -> Scored:
    """Score `recs/<name>/<split>/` (`social-<split>` in the social view) and write `metrics/<name>/<split>/`."""
    clock = Stopwatch()
    split_dir = split_folder(config.view, config.split)
    folder = paths.recs(name, split_dir)
    other = "social" if config.view == "item" else "item"
    if (
        not (folder / "manifest.json").exists()
        and (paths.recs(name, split_folder(other, config.split)) / "manifest.json").exists()
    ):
        raise GdrError(
            f"recommendations {name!r} are of the {other} view, not {config.view}",
            where=str(folder.parent),
            fix=f"score them with --view {other}; a comparison holds runs of one view",
        )
    manifest = read_manifest(
        folder,
        what=f"{config.split} recommendations {name!r}{view_note(config.view)}",
        fix=f"run `gdr sample {paths.dataset} --run {name} --split {config.split}` first",
    )
    check_fresh(manifest, paths.root, what=f"recommendations {name!r}")
    if manifest.config.get("view", "item") != config.view:
        raise GdrError(
            f"recommendations {name!r} are of the {manifest.config.get('view')} view, not {config.view}",
            where=str(folder),
            fix=f"rerun `{manifest.command}`",
        )
    try:
        recs = pl.read_parquet(folder / "recs.parquet")
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise GdrError(
            f"unreadable recommendations: {exc}", where=str(folder), fix=f"rerun `{manifest.command}`"
        ) from None
    ranked = rank_targets(recs, targets)
    metrics: dict[str, Any] = summarize(ranked, config.ks)
    metrics["exclude_history"] = bool(manifest.config.get("exclude_history", False))
    metrics["sampler"] = manifest.stats.get("sampler")
    metrics["view"] = config.view
    for key in ("users_per_s", "nfe_per_user"):
        if key in manifest.stats:
            metrics[key] = manifest.stats[key]
    out = paths.metrics(name, split_dir)
    with staged_dir(out) as tmp:
        atomic_write_json(tmp / "metrics.json", metrics)
        write_parquet(tmp / "ranks.parquet", ranked.frame())
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
    written = read_manifest(out, what=f"metrics {name!r}", fix=f"rerun `gdr evaluate {paths.dataset} --run {name}`")
    return Scored(name=name, metrics=metrics, ranked=ranked, recs=manifest, ref=input_ref(out, paths.root, written))


@dataclass
class RunDetails:
    """What the comparison shows about the trained run behind a recommendations folder."""

    row: dict[str, Any]  # trained_run, params, train_time_s, users_per_s
    ref: InputRef | None
    log: pl.DataFrame | None  # train_log.parquet (step, loss, val_ndcg@10, ...); None for runs without one (pop)


def run_details(paths: DataPaths, scored: Scored) -> RunDetails:
    """Parameters and training time from `runs/<run>/manifest.json`, sampling speed from the recs manifest."""
    trained = scored.recs.config.get("run")
    row: dict[str, Any] = {"trained_run": trained, "users_per_s": scored.recs.stats.get("users_per_s")}
    if not trained:
        return RunDetails(row=row, ref=None, log=None)
    folder = paths.run(str(trained))
    manifest = read_manifest(folder, what=f"run {trained!r}", fix=f"rerun `{scored.recs.command}` after training it")
    params = manifest.stats.get("params")
    row["params"] = int(params) if params is not None else None
    row["train_time_s"] = float(manifest.wall_time_s)
    log = None
    if (folder / "train_log.parquet").is_file():
        try:
            log = pl.read_parquet(folder / "train_log.parquet", columns=["step", "loss", "val_ndcg@10"])
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise GdrError(
                f"unreadable training log: {exc}", where=str(folder), fix=f"rerun `{manifest.command}`"
            ) from None
    return RunDetails(row=row, ref=input_ref(folder, paths.root, manifest), log=log)


@dataclass
class Written:
    """The comparison folder just written: where, its table, the best run and the report settings."""

    folder: Path
    table: pl.DataFrame
    best: str
    report: dict[str, Any] | None


def write_report(paths: DataPaths, config: EvaluateConfig, scored: dict[str, Scored], *, clock: Stopwatch) -> Written:
    """Build `reports/<split>/` (staged, manifest last)."""
    from stages.metrics import plots

    details = {name: run_details(paths, s) for name, s in scored.items()}
    table = comparison_table(
        {n: s.metrics for n, s in scored.items()}, config.ks, {n: d.row for n, d in details.items()}
    )
    split_dir = split_folder(config.view, config.split)
    title = f"{paths.dataset} · {split_dir}"
    report: dict[str, Any] | None = None
    pairwise: pl.DataFrame | None = None
    best = table.sort(config.best_by, descending=True, maintain_order=True)["run"][0]
    if config.report:
        with console.status(
            f"report: paired bootstrap over {table['users'].max():,} users ({config.bootstrap:,} resamples)"
        ):
            comparison = compare_runs(
                {n: s.ranked.per_user(config.ks) for n, s in scored.items()},
                {n: s.ranked.users for n, s in scored.items()},
                metrics=config.metrics,
                best_by=config.best_by,
                samples=config.bootstrap,
                permutations=config.permutations,
                level=config.confidence,
                seed=config.seed,
            )
        best = comparison.best
        intervals = comparison.intervals.select(
            "run", *[c for c in comparison.intervals.columns if c.endswith(("_low", "_high"))]
        )
        table = table.join(intervals, on="run", how="left", maintain_order="left").join(
            against_best(comparison), on="run", how="left", maintain_order="left"
        )
        pairwise = comparison.pairwise
        report = {k: getattr(config, k) for k in ("best_by", "bootstrap", "permutations", "confidence", "seed")} | {
            "best": best
        }

    images: dict[str, bytes] = {}
    if config.plot or config.report:
        images["metrics.png"] = plots.metric_bars(table, config.ks, title=title)
    # keyed by trained run: several recommendation folders of one run (samplers, history modes) share a curve
    logs = {d.row["trained_run"]: d.log for d in details.values() if d.log is not None and d.log.height}
    if config.report and logs:
        images["curves.png"] = plots.training_curves(logs, title=f"{paths.dataset}: training")

    out = paths.reports / split_dir
    inputs = {f"metrics/{n}": s.ref for n, s in scored.items()}
    inputs |= {f"runs/{d.row['trained_run']}": d.ref for d in details.values() if d.ref is not None}
    with staged_dir(out) as tmp:
        write_parquet(tmp / "comparison.parquet", table)
        if pairwise is not None:
            write_parquet(tmp / "pairwise.parquet", pairwise)
        for file, png in images.items():
            atomic_write_bytes(tmp / file, png)
        md = render_markdown(
            table, config.ks, dataset=paths.dataset, split=split_dir, report=report, images=list(images)
        )
        atomic_write_text(tmp / "comparison.md", md)
        if config.report:
            titles = {"metrics.png": "Metrics with bootstrap intervals", "curves.png": "Training curves"}
            page = render_html(
                table,
                config.ks,
                dataset=paths.dataset,
                split=split_dir,
                report=report,
                images={titles[f]: b for f, b in images.items()},
            )
            atomic_write_text(tmp / "report.html", page)
        write_manifest(
            tmp,
            Manifest(
                stage="evaluate",
                dataset=paths.dataset,
                name=split_dir,
                command=command_line(),
                config={**dump_config(config), "runs": list(scored), "metrics": config.metrics},
                seed=config.seed if config.report else None,
                inputs=inputs,
                stats={
                    "runs": len(scored),
                    "users": int(table["users"].max()),
                    "best": best,
                    f"best_{config.best_by}": float(table.filter(pl.col("run") == best)[config.best_by][0]),
                    "report": config.report,
                },
                wall_time_s=clock.seconds(),
            ),
        )
    return Written(folder=out, table=table, best=best, report=report)


def run(
    *, dataset: str, data_dir: Path, config: EvaluateConfig, runs: list[str] | None = None, as_json: bool = False
) -> dict[str, dict[str, Any]]:
    """Score `runs` (default: every recommendations folder of the split) and write the comparison
    folder `reports/<split>/`; returns name -> metrics."""
    clock = Stopwatch()
    paths = DataPaths(data_dir, dataset)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    split_dir = split_folder(config.view, config.split)
    splits = view_splits(processed, config.view)  # the social view of a dataset without friends fails here
    names = list(dict.fromkeys(runs or available_recs(paths, split_dir)))
    if not names:
        what = "report" if config.report else "evaluate"
        train = (
            f"; a social-view run comes from `gdr train-rec {dataset} --view social ...`"
            if config.view == "social"
            else ""
        )
        raise GdrError(
            f"no {config.split} recommendations{view_note(config.view)} to {what} for dataset {dataset!r}",
            fix=f"run `gdr sample {dataset} --run NAME --split {config.split}` first{train}",
        )
    targets = splits.select("user", pl.col(config.split).alias("target"))
    scored: dict[str, Scored] = {}
    with progress("runs") as bar:
        task = bar.add_task("evaluate", total=len(names))
        for name in names:
            scored[name] = evaluate_one(paths, name, config, targets, processed.ref)
            bar.update(task, advance=1)
    results = {name: s.metrics for name, s in scored.items()}
    written = write_report(paths, config, scored, clock=clock)

    if as_json:
        stdout.print_json(json.dumps(results))
    else:
        title = f"{dataset} · {split_dir} · {targets.height:,} users"
        console.print(rich_table(written.table, config.ks, title=title, report=written.report))
    main = written.folder / ("report.html" if config.report else "comparison.md")
    value = results[written.best].get(config.best_by, 0.0)
    console.print(
        f"evaluate: {len(results)} run(s) on {split_dir}; best {config.best_by} {value:.4f} ({written.best}) -> {main}"
    )
    return results
