"""PDRec (Ma et al., AAAI 2024): a pre-trained diffusion recommender as a plug-in for SASRec's training.

The DiffuRec run named by `pdrec.run` scores every item for every user (x_0 of its reverse chain after
the user's whole training sequence, · its item table: s_u [N]). Training then uses three switches:

  (1) reweight        each training target j of user u gets loss weight
                          τ_j = time_min + (1 - time_min) (t_j - t_first) / (t_last - t_first)   (1 if all equal)
                          π_j = softmax_j(s_u[i_j] / temperature)            over u's training items
                          ω_j = τ_j π_j / mean_j(τ_j π_j),   w_j = 1 + α (ω_j - 1)   (mean 1 per user)
  (2) soft_positives  the `positives` top-scored items outside u's training sequence are extra targets
                      after u's last training item, each with loss weight β (positive_weight)
  (3) tail_negatives  negatives are drawn uniformly from u's lowest-scored `tail` share of the catalogue
                      (score <= the user's threshold), shared by the positions of a training window

The signals travel as extra columns of the training windows (`weight` [W, L] per target, `extra`
[W, k] soft positives of the window's last position, `tail_pref` [W, d'] and `tail_thr` [W] the user's
DiffuRec vector and threshold), read by `SeqRecommender.loss`; the model and its checkpoint are plain
SASRec, so `sample` and `evaluate` need nothing of the plug-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from gdr_cli.errors import GdrError
from gdr_cli.manifest import InputRef, check_fresh, input_ref, read_manifest
from gdr_cli.paths import DataPaths
from stages.config.pdrec import PdrecConfig
from stages.data.sequences import eval_histories, training_windows
from stages.inputs import Processed
from stages.models.family import FamilyData
from stages.models.popularity import exclude_items

SCORE_BATCH = 256
"""Users per DiffuRec scoring batch."""


@dataclass
class PdrecSignals:
    """The DiffuRec run's view of every user (rows in split-table order)."""

    user_vec: Tensor  # [U, d'] float32: DiffuRec x_0 after the user's training sequence
    items: Tensor  # [N, d'] float32: DiffuRec item table (score = user_vec · items^T)
    position_score: np.ndarray  # [M] float64: score of each training item, flat in table order
    threshold: Tensor  # [U] float32: the tail holds items scoring <= threshold
    positives: Tensor  # [U, k] int64: top-scored items outside the training sequence (-1 = none)


# ----- the plug-in run ---------------------------------------------------------------------------------
def plugin_folder(paths: DataPaths, run: str) -> Path:
    """A run name of this dataset, or a path to a run folder (a name with '/')."""
    return Path(run) if "/" in run or run.startswith(".") else paths.run(run)


def open_plugin_run(paths: DataPaths, processed: Processed, data: FamilyData, cfg: PdrecConfig):
    """Load and check the DiffuRec run: same dataset, same processed data (ID space), same catalogue."""
    from stages.models.registry import load_model

    if not cfg.run:
        raise GdrError("plugin 'pdrec' needs a trained DiffuRec run",
                       fix=f"train one with `gdr train-rec {paths.dataset} --model diffurec --run NAME` and pass --plugin-run NAME")  # fmt: skip
    folder = plugin_folder(paths, cfg.run)
    manifest = read_manifest(folder, what=f"plugin run {cfg.run!r}",
                             fix=f"train it with `gdr train-rec {paths.dataset} --model diffurec --run {folder.name}`")  # fmt: skip
    where = str(folder)
    if manifest.dataset != paths.dataset:
        raise GdrError(f"plugin run {cfg.run!r} belongs to dataset {manifest.dataset!r}, not {paths.dataset!r}", where=where,
                       fix=f"train a DiffuRec run on {paths.dataset!r} and pass its name")  # fmt: skip
    kind = manifest.stats.get("model")
    if kind != "diffurec":
        raise GdrError(f"plugin run {cfg.run!r} is a {kind!r} run; pdrec needs a diffurec run", where=where,
                       fix=f"train one with `gdr train-rec {paths.dataset} --model diffurec`")  # fmt: skip
    ref = manifest.inputs.get("processed")
    if ref is None or ref.sha256 != processed.ref.sha256 or manifest.stats.get("view", "item") != "item":
        raise GdrError(f"plugin run {cfg.run!r} was trained on another ID space (other processed data or view) than this run",
                       where=where, fix=f"retrain it on the current data: `{manifest.command}`")  # fmt: skip
    check_fresh(manifest, paths.root, what=f"plugin run {cfg.run!r}")
    model, _ = load_model(folder)
    if model.n_items != data.n_items:
        raise GdrError(f"plugin run {cfg.run!r} scores {model.n_items} items, the data has {data.n_items}", where=where,
                       fix=f"retrain it on the current data: `{manifest.command}`")  # fmt: skip
    return model, input_ref(folder, paths.root, manifest)


@torch.no_grad()
def score_users(model, splits: pl.DataFrame, cfg: PdrecConfig) -> tuple[Tensor, Tensor]:
    """DiffuRec x_0 of every user after their training sequence -> (user_vec [U, d'], items [N, d'])."""
    hist = eval_histories(splits, "valid", model.max_len, with_target=False)["history"]
    steps = cfg.sample_steps or model.sample_steps
    if not 1 <= steps <= model.steps:
        raise GdrError(f"pdrec.sample_steps {steps} must be between 1 and the run's {model.steps} diffusion steps",
                       fix="choose fewer sample steps")  # fmt: skip
    parts = [
        model.sample_x0(hist[s : s + SCORE_BATCH], steps=steps, seed=model.seed)
        for s in range(0, len(hist), SCORE_BATCH)
    ]
    return torch.cat(parts).float(), model.item_emb.weight[: model.n_items].detach().float()


def signals_from_scores(user_vec: Tensor, items: Tensor, splits: pl.DataFrame, cfg: PdrecConfig) -> PdrecSignals:
    """Per-position scores, tail thresholds and top unseen items from DiffuRec vectors (batched over users)."""
    n = items.shape[0]
    longest = max(1, int(splits["train"].list.len().max() or 1))
    seen = eval_histories(splits, "valid", longest, with_target=False)["history"]  # [U, longest] training items
    rank = max(1, int(cfg.tail * n))
    thr, pos, per = [], [], []
    for s in range(0, len(user_vec), SCORE_BATCH):
        scores = user_vec[s : s + SCORE_BATCH] @ items.T  # [b, N]
        thr.append(scores.kthvalue(rank, dim=1).values)
        top, idx = exclude_items(scores, seen[s : s + SCORE_BATCH]).topk(min(cfg.positives, n), dim=1)
        pos.append(torch.where(torch.isinf(top), -1, idx))
        h = seen[s : s + SCORE_BATCH]
        per.append(scores.gather(1, h.clamp(min=0))[h >= 0])  # row-major = flat table order
    return PdrecSignals(user_vec=user_vec, items=items, position_score=torch.cat(per).double().numpy(),
                        threshold=torch.cat(thr), positives=torch.cat(pos))  # fmt: skip


# ----- (1) history reweighting -------------------------------------------------------------------------
def training_times(processed: Processed, splits: pl.DataFrame) -> np.ndarray:
    """Timestamps of every training item, flat in split-table order [M] int64 (the first len(train) interactions
    of each user, as the leave-one-out split took them)."""
    inter = processed.table("interactions")
    per_user = inter.group_by("user", maintain_order=True).agg(pl.col("item"), pl.col("timestamp"))
    joined = splits.select("user", "train").join(per_user, on="user", how="left", maintain_order="left")
    joined = joined.with_columns(
        pl.col("item").list.head(pl.col("train").list.len()), pl.col("timestamp").list.head(pl.col("train").list.len())
    )
    if not joined["item"].cast(pl.List(pl.Int32)).equals(joined["train"]):
        raise GdrError("the training split's items are not the first interactions of each user",
                       where=str(processed.folder), fix=f"rerun `{processed.manifest.command}`")  # fmt: skip
    return joined["timestamp"].explode().to_numpy().astype(np.int64)


def history_weights(
    scores: np.ndarray, times: np.ndarray, lengths: np.ndarray, *, strength: float, temperature: float, time_min: float
) -> np.ndarray:
    """w_j = 1 + α (ω_j - 1) of every training position, flat [M] float64 (see the module docstring).
    scores, times: [M] flat in table order; lengths: [U] training items per user (each >= 1)."""
    starts = np.cumsum(lengths) - lengths
    owner = np.repeat(np.arange(len(lengths)), lengths)
    t_first, t_last = np.minimum.reduceat(times, starts), np.maximum.reduceat(times, starts)
    span = (t_last - t_first).astype(np.float64)
    frac = np.where(span[owner] > 0, (times - t_first[owner]) / np.where(span > 0, span, 1.0)[owner], 1.0)
    tau = time_min + (1.0 - time_min) * frac
    z = scores / temperature
    e = np.exp(z - np.maximum.reduceat(z, starts)[owner])
    pi = e / np.add.reduceat(e, starts)[owner]
    raw = tau * pi
    omega = raw / (np.add.reduceat(raw, starts) / lengths)[owner]
    return 1.0 + strength * (omega - 1.0)


# ----- training windows with the signals -------------------------------------------------------------------
def pdrec_windows(
    splits: pl.DataFrame, signals: PdrecSignals, weights: np.ndarray | None, cfg: PdrecConfig, max_len: int, stride: int
) -> dict[str, Tensor]:
    """SASRec training windows (`seq` [W, L+1]) plus the switched-on signal columns.

    Windows are cut over flat positions (so each window knows its users and per-position weights); with
    soft positives every sequence gets one extra slot (the top positive, weight 0: the extra loss scores it)
    so the user's last training item is an input and its query predicts the soft positives."""
    lengths = splits["train"].list.len().to_numpy().astype(np.int64)
    items = splits["train"].explode().to_numpy().astype(np.int64)
    w = np.ones(len(items)) if weights is None else weights
    owner = np.repeat(np.arange(len(lengths)), lengths)
    if cfg.soft_positives:  # append the top positive to each sequence (flat arrays re-laid out)
        new_len = lengths + 1
        starts = np.cumsum(new_len) - new_len
        flat = np.empty(int(new_len.sum()), dtype=np.int64)
        mask = np.ones(len(flat), dtype=bool)
        mask[starts + lengths] = False
        flat[mask] = items
        flat[~mask] = signals.positives[:, 0].numpy()
        ww = np.zeros(len(flat))
        ww[mask] = w
        items, w, lengths = flat, ww, new_len
        owner = np.repeat(np.arange(len(lengths)), lengths)
    offsets = np.cumsum(lengths) - lengths
    index = splits.select(
        "user", train=pl.int_ranges(pl.Series(offsets), pl.Series(offsets + lengths), dtype=pl.Int64)
    )  # flat positions instead of items
    pos = training_windows(index, max_len, stride).numpy()  # [W, L+1] flat positions, -1 = padding
    real = pos >= 0
    seq = np.where(real, items[np.where(real, pos, 0)], -1)
    out = {"seq": torch.from_numpy(seq)}
    users = owner[pos[:, -1]]  # [W] table row of each window's user (the last column is always real)
    if weights is not None or cfg.soft_positives:
        out["weight"] = torch.from_numpy(
            np.where(real[:, 1:], w[np.where(real, pos, 0)][:, 1:], 0.0).astype(np.float32)
        )
    if cfg.soft_positives:
        last = pos[:, -1] == (offsets + lengths - 1)[users]  # the window ends at the user's appended slot
        extra = signals.positives[torch.from_numpy(users)]
        out["extra"] = torch.where(torch.from_numpy(last)[:, None], extra, -1)
    if cfg.tail_negatives:
        rows = torch.from_numpy(users)
        out["tail_pref"], out["tail_thr"] = signals.user_vec[rows], signals.threshold[rows]
    return out


def prepare_pdrec(
    paths: DataPaths, processed: Processed, data: FamilyData, cfg: PdrecConfig
) -> tuple[dict[str, object], dict[str, InputRef]]:
    """Everything the plug-in needs, computed once before training: ({"signals", "weights"}, {"plugin": ref})."""
    if data.view != "item" or data.train_split != "base":
        raise GdrError("plugin 'pdrec' trains on the base item split (it reads the interactions' time intervals)",
                       where=f"--train-split {data.train_split}" if data.view == "item" else "--view social",
                       fix="drop --train-split / --view social, or drop --plugin")  # fmt: skip
    model, ref = open_plugin_run(paths, processed, data, cfg)
    user_vec, items = score_users(model, data.splits, cfg)
    signals = signals_from_scores(user_vec, items, data.splits, cfg)
    weights = None
    if cfg.reweight:
        lengths = data.splits["train"].list.len().to_numpy().astype(np.int64)
        weights = history_weights(signals.position_score, training_times(processed, data.splits), lengths,
                                  strength=cfg.reweight_strength, temperature=cfg.preference_temperature, time_min=cfg.time_min)  # fmt: skip
    return {"signals": signals, "weights": weights}, {"plugin": ref}
