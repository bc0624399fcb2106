"""Report plots as PNG bytes (matplotlib, Agg): metric bars with intervals and training curves."""

from __future__ import annotations

import io
from collections.abc import Sequence

import polars as pl


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def metric_bars(table: pl.DataFrame, ks: Sequence[int], *, title: str) -> bytes:
    """Grouped bars: one group per recall@K / ndcg@K, one bar per run; when the table has
    `<metric>_low` / `<metric>_high` columns each bar carries that interval as an error bar."""
    import numpy as np

    plt = _pyplot()
    cols = [f"{m}@{k}" for m in ("recall", "ndcg") for k in ks]
    runs = table["run"].to_list()
    x = np.arange(len(cols))
    width = 0.8 / max(len(runs), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(cols)), 3.8))
    with_ci = all(f"{c}_low" in table.columns for c in cols)
    for i, row in enumerate(table.iter_rows(named=True)):
        vals = np.array([row[c] for c in cols])
        yerr = None
        if with_ci:
            lo = np.array([row[f"{c}_low"] for c in cols])
            hi = np.array([row[f"{c}_high"] for c in cols])
            yerr = np.stack([vals - lo, hi - vals]).clip(min=0)
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, vals, width, yerr=yerr, capsize=2, label=row["run"])
    ax.set_xticks(x, cols, rotation=30, ha="right")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def training_curves(logs: dict[str, pl.DataFrame], *, title: str) -> bytes:
    """Two panels against the training step: loss and validation NDCG@10, one line per run.

    logs: run -> train_log table (columns step, loss, val_ndcg@10; nulls where not logged).
    """
    plt = _pyplot()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, log in logs.items():
        loss = log.filter(pl.col("loss").is_not_null())
        val = log.filter(pl.col("val_ndcg@10").is_not_null())
        if loss.height:
            loss_ax.plot(loss["step"], loss["loss"], label=name)
        if val.height:
            val_ax.plot(val["step"], val["val_ndcg@10"], marker="o", markersize=3, label=name)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("training loss")
    val_ax.set_xlabel("step")
    val_ax.set_ylabel("validation NDCG@10")
    for ax in (loss_ax, val_ax):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _png(fig)
