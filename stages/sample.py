"""`gdr sample`: top-K recommendations for the validation or test users of a trained run.

Reads `runs/<run>/` (the checkpoint carries its config) and the processed splits, feeds
each user's history (PROTOCOL.md §1: training items for 'valid', plus the validation item for
'test') to `model.recommend` in batches, and writes `recs/<name>/<split>/recs.parquet`
(user, rank, item, score). The test target is never read here.

A run trained on the social view (its meta says so) recommends friends: histories and users come
from `social_splits.parquet`, the user themself is always excluded (during the search), and the
table goes to `recs/<name>/social-<split>/`, apart from item-view recommendations.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl

from gdr_cli.console import console, progress
from gdr_cli.errors import GdrError
from gdr_cli.io import staged_dir, write_parquet
from gdr_cli.manifest import Manifest, Stopwatch, check_fresh, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.sample import SampleConfig, check_applicable
from stages.data.sequences import eval_histories
from stages.data.views import split_folder, view_note, view_splits, with_self
from stages.inputs import open_processed, open_run
from stages.models.registry import load_model
from stages.samplers.base import SamplerOptions
from stages.samplers.beam import INVALID
from stages.training.device import resolve_device


def recs_frame(users: np.ndarray, items: np.ndarray, scores: np.ndarray) -> pl.DataFrame:
    """Long table from per-user lists; slots with no item (-1) are dropped, codes that name no item
    (INVALID, -2: unconstrained decoding) are kept as null items so `evaluate` counts them.

    users: [U] int, items: [U, K] int64 (-1 = none, -2 = invalid code), scores: [U, K] float32.
    """
    u, k = items.shape
    frame = pl.DataFrame(
        {
            "user": np.repeat(users.astype(np.int32), k),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), u),
            "item": items.reshape(-1).astype(np.int32),
            "score": scores.reshape(-1).astype(np.float32),
        }
    )
    frame = frame.filter(pl.col("item") != -1)
    return frame.with_columns(pl.when(pl.col("item") == INVALID).then(None).otherwise(pl.col("item")).alias("item"))


def digits_per_step(config: SampleConfig, meta: dict) -> int:
    """cpd's digits per step: the one asked for, else the run's choice on validation (`gdr diffuse` records
    it in the run's meta), else 1 (runs trained without a choice)."""
    return config.digits_per_step or int(meta.get("digits_per_step", 1))


def whole_code(config: SampleConfig, meta: dict, digits: int) -> str:
    """cpd's whole-code search: the one asked for, else the run's choice when sampling at the run's own step size,
    else exact."""
    if config.whole_code is not None:
        return config.whole_code
    return str(meta.get("whole_code", "exact")) if digits == int(meta.get("digits_per_step", 0)) else "exact"


def run_view(asked: str | None, meta: dict, run_name: str) -> str:
    """The view a run recommends in: its meta's (runs without one are item-view); `asked` must agree."""
    view = str(meta.get("view", "item"))
    if asked is not None and asked != view:
        raise GdrError(
            f"run {run_name!r} was trained on the {view} view, not {asked}",
            fix=f"drop --view (the run's view is used), or sample a run trained with `gdr train-rec ... --view {asked}`",
        )
    return view


def run(
    *,
    dataset: str,
    data_dir: Path,
    run_name: str,
    config: SampleConfig,
    out_name: str | None = None,
    given: set[str] | None = None,
) -> Manifest:
    """Sample top-`config.k` lists for every user of `config.split`; returns the recs manifest.

    `given`: the config keys the user set explicitly (the CLI passes its flags and --set keys);
    None = the fields set on `config`. Those the model's sampler does not read are an error.
    """
    clock = Stopwatch()
    paths = DataPaths(data_dir, dataset)
    trained = open_run(paths, run_name)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    device = resolve_device(config.device, key="sample.device")
    model, meta = load_model(trained.folder, device=str(device))
    sampler = model.check_sampler(config.sampler)
    check_applicable(config, config.model_fields_set if given is None else given, sampler, model.kind)
    name = out_name or (run_name if sampler == model.samplers[0] else f"{run_name}-{sampler}")
    max_len = config.max_len or int(meta.get("max_len", 20))
    view = run_view(config.view, meta, run_name)

    splits = view_splits(processed, view)
    data = eval_histories(splits, config.split, max_len, with_target=False)
    users, history = data["user"], data["history"]
    exclude = None
    if config.exclude_history:  # the whole history, not only the last max_len items the model reads
        longest = int(splits["train"].list.len().max() or 0) + 1
        exclude = eval_histories(splits, config.split, max(longest, 1), with_target=False)["history"]
    exclude = with_self(users, exclude, view)  # social view: never the user themself
    n = len(users)
    items_out = np.full((n, config.k), -1, dtype=np.int64)
    scores_out = np.full((n, config.k), -np.inf, dtype=np.float32)
    nfe_total, rounds, in_window = 0.0, 0, 0
    gate_total: float | None = None  # models with a repeat head: summed P(repeat)
    options = SamplerOptions.of(config)
    if sampler == "cpd":  # --whole-code beam alone means the whole code in one step
        whole = config.whole_code == "beam" and config.digits_per_step is None
        digits = int(model.codes.shape[1]) if whole else digits_per_step(config, meta)
        options = replace(options, digits_per_step=digits, whole_code=whole_code(config, meta, digits))
    user_ids = users.long()
    start = time.perf_counter()
    with progress("users") as bar:
        task = bar.add_task(f"sample {name}", total=n)
        for lo in range(0, n, config.batch_size):
            hi = min(lo + config.batch_size, n)
            items, scores = model.recommend(
                history[lo:hi].to(device),
                k=config.k,
                sampler=sampler,
                options=replace(options, users=user_ids[lo:hi]),  # noise keyed by user ID, not batch position
                exclude=None if exclude is None else exclude[lo:hi].to(device),
            )
            items_out[lo:hi] = items.cpu().numpy()
            scores_out[lo:hi] = scores.float().cpu().numpy()
            batch_stats = getattr(model, "sample_stats", {})
            nfe_total += float(batch_stats.get("nfe", 0.0)) * (hi - lo)
            gate = batch_stats.get("repeat_gate")
            gate_total = None if gate is None else (gate_total or 0.0) + float(gate) * (hi - lo)
            listed = items.cpu()  # [b, K]: how many of them are items of the window the model read
            in_window += int(
                ((listed[:, :, None] == history[lo:hi, None, :]) & (listed[:, :, None] >= 0)).any(-1).sum()
            )
            rounds = max(rounds, int(batch_stats.get("rounds", 0)))
            bar.update(task, advance=hi - lo)
    seconds = time.perf_counter() - start
    frame = recs_frame(users.numpy(), items_out, scores_out)
    stats = {
        "users": n,
        "rows": frame.height,
        "users_per_s": round(n / max(seconds, 1e-9), 2),
        "decode_s": round(seconds, 3),
        "sampler": sampler,
        **({"digits_per_step": options.digits_per_step} if sampler == "cpd" else {}),
        **({"whole_code": options.whole_code} if sampler == "cpd" and options.whole_code != "exact" else {}),
        "exclude_history": config.exclude_history,
        "view": view,
    }
    stats["history_in_list"] = round(in_window / max(n, 1), 3)  # listed items among the max_len history items read
    if nfe_total:
        stats["nfe_per_user"] = round(nfe_total / n, 3)
    if gate_total is not None:  # models with a repeat head: their mean P(repeat)
        stats["repeat_gate"] = round(gate_total / n, 4)
    if rounds:  # searches run for the users who had fewer than k items after the previous ones
        stats["max_rounds"] = rounds
    out = paths.recs(name, split_folder(view, config.split))
    resolved = {**dump_config(config), "view": view, "sampler": sampler, "max_len": max_len, "run": run_name}
    resolved["digits_per_step"] = options.digits_per_step if sampler == "cpd" else config.digits_per_step
    resolved["whole_code"] = options.whole_code if sampler == "cpd" else config.whole_code
    with staged_dir(out) as tmp:
        write_parquet(tmp / "recs.parquet", frame)
        write_manifest(
            tmp,
            Manifest(
                stage="sample",
                dataset=dataset,
                name=name,
                command=command_line(),
                config=resolved,
                seed=config.seed,
                inputs={"run": trained.ref, "processed": processed.ref},
                stats=stats,
                wall_time_s=clock.seconds(),
            ),
        )
    extra = f", {options.digits_per_step} digit(s)/step" if sampler == "cpd" else ""
    extra += " (trie beam)" if sampler == "cpd" and options.whole_code == "beam" else ""
    extra += f", {stats['nfe_per_user']} model calls/user" if "nfe_per_user" in stats else ""
    extra += f", {stats['history_in_list']} history items/list"
    extra += f", repeat gate {stats['repeat_gate']}" if "repeat_gate" in stats else ""
    console.print(
        f"sample: {name} ({sampler}) top-{config.k} for {n:,} {config.split} users{view_note(view)} at {stats['users_per_s']:,} users/s{extra} -> {out}"
    )
    return Manifest.model_validate_json((out / "manifest.json").read_text())
