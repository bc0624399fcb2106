"""`gdr train`: the IDGenRec pipeline in one command, composed of the stage functions.

    preprocess (only when the processed data is missing; it says so)
    for each round r = 1..R, for each view (item, social, or both, item first):
        train-gen round r (generator phase, IDs, recommender phase)   -> runs/gen-*-round{r}, runs/rec-<view>-round{r}
        sample rec-<view>-round{r} on the sample split                 -> recs/rec-<view>-round{r}/...
        evaluate the split (every run of the view, so baselines sit in the same report)
    print one metrics table per round and view; write runs/train-<view>/ (rounds.parquet, rounds.png, manifest)

Every artifact is an ordinary stage artifact. `--resume` skips rounds whose runs and metrics exist and
continues an interrupted phase from its checkpoint. With `--view both` the two views share the word
vocabulary (one tokenizer learned from the items' text) and train round by round in one run; with
corruption training (`train_gen.recommender.use_diffusion: 1`) each view's recommender takes its
cross-view words from the other view's latest IDs and, when lambda_kl > 0, its KL partner from the other
view's latest recommender (`stages.train_gen.corruption_other`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from rich.table import Table

from gdr_cli.console import console
from gdr_cli.io import atomic_path, staged_dir, write_parquet
from gdr_cli.manifest import Manifest, Stopwatch, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.evaluate import EvaluateConfig
from stages.config.preprocess import PreprocessConfig
from stages.config.sample import SampleConfig
from stages.config.train_gen import TrainGenConfig
from stages.data.views import view_splits
from stages.inputs import open_processed

ROUNDS_FILE = "rounds.parquet"


def views_of(view: str) -> list[str]:
    return ["item", "social"] if view == "both" else [view]


def ensure_processed(paths: DataPaths, config: PreprocessConfig, raw_input: Path | None) -> None:
    """Run `preprocess` (source = the dataset name) when the dataset has no processed data yet."""
    if (paths.processed / "manifest.json").is_file():
        return
    from stages import preprocess

    console.print(
        f"train: no processed data for {paths.dataset!r} under {paths.root}; running `gdr preprocess {paths.dataset}` first"
    )
    preprocess.run(source=paths.dataset, data_dir=paths.root, config=config, input=raw_input)


def _previous_rows(folder: Path) -> pl.DataFrame | None:
    path = folder / ROUNDS_FILE
    return pl.read_parquet(path) if path.is_file() else None


def metrics_table(view: str, r: int, split: str, metrics: dict[str, Any], timing: dict[str, float]) -> Table:
    keys = [k for k in metrics if k.endswith("@10")]
    table = Table(title=f"round {r} · {view} view · {split}", title_justify="left")
    for col in ["run", *keys, "generator s", "recommender s"]:
        table.add_column(col, justify="right")
    table.add_row(
        metrics["run"],
        *(f"{metrics[k]:.4f}" for k in keys),
        f"{timing['generator_s']:.0f}",
        f"{timing['recommender_s']:.0f}",
    )
    return table


def plot_rounds(path: Path, frame: pl.DataFrame, split: str) -> None:
    """NDCG@10 and Recall@10 per round, one line per view and metric (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for view in frame["view"].unique(maintain_order=True).to_list():
        rows = frame.filter(pl.col("view") == view).sort("round")
        for metric, style in (("ndcg@10", "-o"), ("recall@10", "--s")):
            if metric in rows.columns:
                ax.plot(rows["round"], rows[metric], style, label=f"{view} {metric}")
    ax.set_xlabel("round")
    ax.set_ylabel(f"{split} metric")
    ax.set_xticks(sorted(set(frame["round"].to_list())))
    ax.legend()
    ax.set_title("IDGenRec rounds")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run(*, dataset: str, data_dir: Path, view: str, gen: TrainGenConfig, preprocess: PreprocessConfig,
        sample: SampleConfig, evaluate: EvaluateConfig, resume: bool = False, raw_input: Path | None = None) -> pl.DataFrame:  # fmt: skip
    """The whole pipeline for `view` ('item', 'social' or 'both'); returns one row per (round, view)."""
    from stages import evaluate as evaluate_stage
    from stages import sample as sample_stage
    from stages import train_gen

    clock = Stopwatch()
    paths = DataPaths(Path(data_dir), dataset)
    ensure_processed(paths, preprocess, raw_input)
    processed = open_processed(paths)
    views = views_of(view)
    for v in views:
        view_splits(processed, v)  # a social view without friends fails before any training
    rc = gen.recommender
    if len(views) == 2 and rc.use_diffusion and (rc.other_view_run or rc.other_view_ids):
        from gdr_cli.errors import GdrError

        key = "other_view_run" if rc.other_view_run else "other_view_ids"
        raise GdrError(f"{key} is set, but with --view both each view's other view is the other session",
                       where=f"train_gen.recommender.{key}", fix="drop it, or train one view (--view item|social)")  # fmt: skip
    folder = paths.run(f"{gen.name_prefix}train-{view}")
    old = _previous_rows(folder) if resume else None
    rows: list[dict[str, Any]] = old.to_dicts() if old is not None else []
    done_eval = {(row["view"], row["round"]) for row in rows}
    sessions: dict[str, train_gen.Session] = {}
    tokenizer = None
    for v in views:
        sessions[v] = train_gen.open_session(paths=paths, processed=processed, config=gen.model_copy(update={"view": v}),
                                             tokenizer=tokenizer)  # fmt: skip
        sessions[v].partner = len(views) == 2  # corruption's other view: the other session's IDs and recommender
        tokenizer = sessions[v].tokenizer
    for v in views:
        train_gen.check_other_view(sessions[v])
    completed = {v: train_gen.completed_rounds(paths, v, gen.rounds, gen.name_prefix) if resume else 0 for v in views}
    pending = [r for r in range(1, gen.rounds + 1) for v in views if r > completed[v] or (v, r) not in done_eval]
    start = min(pending, default=gen.rounds + 1) if resume else 1
    for r in range(start, gen.rounds + 1):
        for v in views:
            s = sessions[v]
            if r > completed[v]:
                timing = train_gen.run_round(s, r, resume=resume)
                timing = {k: timing[k] for k in ("generator_s", "recommender_s")}
            else:
                timing = {"generator_s": float("nan"), "recommender_s": float("nan")}
            if (v, r) in done_eval:
                continue
            rec = sessions[v].names(r)[1]
            sample_stage.run(
                dataset=dataset, data_dir=paths.root, run_name=rec, config=sample.model_copy(update={"view": v})
            )
            results = evaluate_stage.run(
                dataset=dataset,
                data_dir=paths.root,
                config=evaluate.model_copy(update={"view": v, "split": sample.split}),
            )
            metrics = {"run": rec, **{k: float(x) for k, x in results[rec].items() if "@" in k}}
            console.print(metrics_table(v, r, sample.split, metrics, timing))
            rows = [row for row in rows if (row["view"], row["round"]) != (v, r)]
            rows.append({"round": r, "view": v, **metrics, **timing})
            _write(paths, folder, rows, view, gen, sample.split, clock)
    frame = pl.DataFrame(rows).sort("round", "view") if rows else pl.DataFrame()
    if rows:
        _write(paths, folder, rows, view, gen, sample.split, clock)
    return frame


def _write(paths: DataPaths, folder: Path, rows: list[dict[str, Any]], view: str, gen: TrainGenConfig, split: str,
           clock: Stopwatch) -> None:  # fmt: skip
    frame = pl.DataFrame(rows).sort("round", "view")
    with staged_dir(folder) as tmp:
        write_parquet(tmp / ROUNDS_FILE, frame)
        plot_rounds(tmp / "rounds.png", frame, split)
        write_manifest(tmp, Manifest(stage="train", dataset=paths.dataset, name=folder.name, command=command_line(),
                                     config=dump_config(gen), seed=gen.seed, stats={"view": view, "split": split, "rounds": frame.to_dicts()},
                                     wall_time_s=clock.seconds()))  # fmt: skip
