"""The run folder both model stages write from a `FitResult`: weights, log table, curve, log file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from gdr_cli.io import atomic_path, write_parquet
from stages.models.base import Recommender
from stages.models.registry import save_model
from stages.training.loop import LOG_FILE, FitResult

LOG_SCHEMA = {
    "step": pl.Int64,
    "epoch": pl.Float64,
    "loss": pl.Float64,
    "lr": pl.Float64,
    "examples_per_s": pl.Float64,
    "val_ndcg@10": pl.Float64,
    "wall_s": pl.Float64,
}


UNFINGERPRINTED = (
    "max_minutes",
    "device",
    "eval_batch_size",
    "log_every",
    "checkpoint_every",
    "tracker",
    "wandb_project",
)
"""Training-loop keys that may change between an interrupted run and its `--resume` (they do not
change what one step computes); every other config key must match."""


def resume_fingerprint(config: Any, inputs: dict[str, str]) -> dict[str, Any]:
    """What a `--resume` must find unchanged: the resolved config (less UNFINGERPRINTED keys of its
    `train` section) and the hashes of the input manifests (`{"processed": sha256, "ids": sha256}`)."""
    settings = json.loads(config.model_dump_json())
    for key in UNFINGERPRINTED:
        settings.get("train", {}).pop(key, None)
    return {"config": settings, **inputs}


def log_frame(log: list[dict]) -> pl.DataFrame:
    """The training log rows as a table (one row per log point or validation); separate loss terms
    (`loss_ce`, `loss_mask`, `loss_kl`, ... when the model reports them) become Float64 columns."""
    terms = sorted({k for row in log for k in row if k.startswith("loss_")})
    schema = {**LOG_SCHEMA, **dict.fromkeys(terms, pl.Float64)}
    return pl.DataFrame([{k: row.get(k) for k in schema} for row in log], schema=schema)


def plot_curve(path: Path, log: pl.DataFrame, title: str = "") -> None:
    """Training loss and validation NDCG@10 against the step, one PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    loss = log.filter(pl.col("loss").is_not_null())
    ax.plot(loss["step"], loss["loss"], color="tab:blue", label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="tab:blue")
    val = log.filter(pl.col("val_ndcg@10").is_not_null())
    twin = ax.twinx()
    twin.plot(val["step"], val["val_ndcg@10"], color="tab:orange", marker="o", markersize=3, label="val NDCG@10")
    twin.set_ylabel("validation NDCG@10", color="tab:orange")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def save_run(*, folder: Path, model: Recommender, result: FitResult, meta: dict[str, Any]) -> None:
    """Write the best weights (`model.safetensors` + `model.json`), `train_log.parquet`, `curve.png`
    and `train.log` into `folder` (from `staged_dir`; the caller writes the manifest last).

    `model` is loaded with `result.best_state` (and so left with the best weights).
    """
    model.load_state_dict(result.best_state)
    save_model(folder, model, meta)
    frame = log_frame(result.log)
    write_parquet(folder / "train_log.parquet", frame)
    plot_curve(
        folder / "curve.png",
        frame,
        title=f"{model.kind}: best val NDCG@10 {result.best_metric:.4f} @ step {result.best_step}",
    )
    if result.workdir is not None and (result.workdir / LOG_FILE).is_file():
        shutil.copyfile(result.workdir / LOG_FILE, folder / LOG_FILE)
