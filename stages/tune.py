"""`gdr tune`: hyper-parameter search over `train-rec` runs with Optuna (the optional extra `gdr[tune]`).

Each trial is one `train-rec` run (`runs/<study>-<n>/`) whose config is the resolved `train_rec`
section with the searched keys (`tune.space`) set to the trial's values. The objective is the run's
best validation NDCG@10 (the test split is never read); every validation reports its NDCG@10 to the
trial, so the median pruner stops trials whose validation curve falls behind earlier ones.

The study lives in an SQLite file, `<root>/<dataset>/tune/<study>.db`: a second call (or one after an
interruption) continues it. After each call, `tune/<study>/` (staged, manifest last) holds
`trials.parquet` (one row per trial), `importance.png` (Optuna's parameter importances) and
`best.yaml`, the best trial's `train_rec` config, which `gdr train-rec --config` accepts.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_path, staged_dir, write_parquet
from gdr_cli.manifest import Manifest, Stopwatch, check_fresh, command_line, dump_config, write_manifest
from gdr_cli.paths import DataPaths
from stages.config.train_rec import TrainRecConfig
from stages.config.tune import ParamRange, TuneConfig
from stages.inputs import open_processed

INSTALL_FIX = "pip install 'gdr[tune]' (or pip install optuna)"


class _Pruned(Exception):
    """Raised from the validation hook to end a trial that the pruner stops."""


def import_optuna() -> Any:
    """The optuna module, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise GdrError("gdr tune needs Optuna, which is not installed", fix=INSTALL_FIX) from None
    return optuna


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted `key` (e.g. 'tiger.lambda_mask') of a nested config dict; unknown keys are errors."""
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            break
    if not isinstance(node, dict) or leaf not in node:
        raise GdrError(f"unknown train_rec key {key!r} in tune.space",
                       fix="use dotted train_rec keys, e.g. train.lr or tiger.lambda_mask (see `gdr train-rec --help`)")  # fmt: skip
    node[leaf] = value


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> TrainRecConfig:
    """The `train_rec` config of a trial: `base` (a resolved config as JSON data) with `params` set."""
    from pydantic import ValidationError

    data = copy.deepcopy(base)
    for key, value in params.items():
        set_key(data, key, value)
    try:
        return TrainRecConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise GdrError(f"tune.space gives train_rec.{key} an invalid value: {err['msg']}",
                       fix="narrow that key's range in the tune section") from None  # fmt: skip


def suggest(trial: Any, key: str, rng: ParamRange) -> Any:
    if rng.type == "categorical":
        return trial.suggest_categorical(key, rng.choices)
    if rng.type == "int":
        return trial.suggest_int(key, int(rng.low), int(rng.high), log=rng.log)  # type: ignore[arg-type]
    return trial.suggest_float(key, float(rng.low), float(rng.high), log=rng.log)  # type: ignore[arg-type]


def check_space(base: dict[str, Any], space: dict[str, ParamRange]) -> None:
    """Every searched key exists and its range ends give valid configs (before any trial trains)."""
    if not space:
        raise GdrError("tune.space is empty", fix="list at least one train_rec key to search in the tune section")
    for end in ("low", "high"):
        values = {k: (r.choices[0] if r.type == "categorical" else getattr(r, end)) for k, r in space.items()}
        values = {k: int(v) if space[k].type == "int" else v for k, v in values.items()}
        trial_config(base, values)


def run(*, dataset: str, data_dir: Path, config: TuneConfig, base: TrainRecConfig) -> Manifest:
    """Run `config.n_trials` more trials of study `config.study_name`; write tune/<study>/ and return its manifest."""
    optuna = import_optuna()
    from stages import train_rec

    clock = Stopwatch()
    paths = DataPaths(data_dir, dataset)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    if base.model in ("pop", "friendpop"):
        raise GdrError(
            f"{base.model} has nothing to tune", fix="choose a trained model: --model tiger (or sasrec, hstu, diffurec)"
        )
    base_data = json.loads(base.model_dump_json())
    check_space(base_data, config.space)

    folder = paths.home / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(folder / f'{config.study_name}.db').resolve()}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    signature = {"dataset": dataset, "model": base.model, "space": sorted(config.space)}
    try:
        existing = optuna.load_study(study_name=config.study_name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None and existing.user_attrs.get("signature") != signature:
        raise GdrError(f"study {config.study_name!r} was run with another model or search space",
                       where=storage.removeprefix("sqlite:///"),
                       fix="use another --study-name, or the same model and tune.space as before")  # fmt: skip
    before = len(existing.trials) if existing is not None else 0
    sampler = optuna.samplers.TPESampler(seed=config.seed + before, n_startup_trials=config.startup_trials)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=config.startup_trials)
        if config.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(study_name=config.study_name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)  # fmt: skip
    study.set_user_attr("signature", signature)

    def objective(trial: Any) -> float:
        params = {key: suggest(trial, key, rng) for key, rng in config.space.items()}
        cfg = trial_config(base_data, params)
        name = f"{config.study_name}-{trial.number}"
        trial.set_user_attr("run", name)

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise _Pruned(step)

        try:
            manifest = train_rec.run(
                dataset=dataset, data_dir=data_dir, config=cfg, run_name=name, on_validation=report
            )
        except _Pruned as stop:
            shutil.rmtree(paths.work(name), ignore_errors=True)
            console.print(f"tune: trial {trial.number} pruned at step {stop.args[0]}")
            raise optuna.TrialPruned() from None
        assert manifest is not None
        return float(manifest.stats["best_val_ndcg@10"])

    study.optimize(objective, n_trials=config.n_trials, timeout=config.timeout, gc_after_trial=False)

    table = trials_table(study)
    complete = table.filter(pl.col("state") == "COMPLETE")
    if complete.is_empty():
        raise GdrError(f"no trial of study {config.study_name!r} completed", fix="raise --n-trials or --timeout")
    best = study.best_trial
    best_cfg = trial_config(base_data, best.params)
    importances = param_importances(optuna, study)
    stats = {
        "trials": table.height, "complete": complete.height, "pruned": int((table["state"] == "PRUNED").sum()),
        "this_call": table.height - before, "best_trial": best.number, "best_val_ndcg@10": round(float(best.value), 6),
        "best_run": best.user_attrs.get("run"), "best_params": best.params, "importances": importances,
        "storage": paths.rel(folder / f"{config.study_name}.db"),
    }  # fmt: skip
    with staged_dir(folder / config.study_name) as tmp:
        write_parquet(tmp / "trials.parquet", table)
        write_best_yaml(tmp / "best.yaml", best_cfg, comment=f"gdr tune {dataset} --study-name {config.study_name}: "
                        f"trial {best.number}, validation NDCG@10 {best.value:.4f}")  # fmt: skip
        plot_importances(
            tmp / "importance.png", importances, title=f"{config.study_name}: {complete.height} completed trials"
        )
        manifest = Manifest(stage="tune", dataset=dataset, name=config.study_name, command=command_line(),
                            config={"tune": dump_config(config), "train_rec": dump_config(base)}, seed=config.seed,
                            inputs={"processed": processed.ref}, stats=stats, wall_time_s=clock.seconds())  # fmt: skip
        write_manifest(tmp, manifest)
    print_summary(table, importances)
    console.print(
        f"tune: study {config.study_name} on {dataset}: {stats['this_call']} trial(s) this call, {table.height} in all "
        f"({complete.height} complete, {stats['pruned']} pruned); best val NDCG@10 {best.value:.4f} (trial {best.number}, "
        f"run {stats['best_run']}) -> {paths.rel(folder / config.study_name)}/best.yaml"
    )
    return manifest


def trials_table(study: Any) -> pl.DataFrame:
    """One row per trial: number, state, value (best validation NDCG@10), run, seconds, then each parameter."""
    rows = []
    keys = sorted({k for t in study.trials for k in t.params})
    for t in study.trials:
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "run": t.user_attrs.get("run"),
                     "last_step": t.last_step, "seconds": seconds, **{k: t.params.get(k) for k in keys}})  # fmt: skip
    schema = {"number": pl.Int64, "state": pl.String, "value": pl.Float64, "run": pl.String, "last_step": pl.Int64,
              "seconds": pl.Float64}  # fmt: skip
    return pl.DataFrame(rows, schema_overrides=schema, infer_schema_length=None)


def param_importances(optuna: Any, study: Any) -> dict[str, float]:
    """Optuna's importance of each parameter for the completed trials ({} when fewer than 2 completed)."""
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    if len(done) < 2:
        return {}
    try:
        found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {k: round(float(v), 6) for k, v in found.items()}


def plot_importances(path: Path, importances: dict[str, float], title: str) -> None:
    """Horizontal bars of the parameter importances (a note when there are none yet), one PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.4 * max(len(importances), 3) + 1.2))
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance for validation NDCG@10")
    else:
        ax.text(0.5, 0.5, "importances need at least 2 completed trials", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def write_best_yaml(path: Path, cfg: TrainRecConfig, comment: str) -> None:
    """The best `train_rec` config as a config file (`gdr train-rec --config path`)."""
    import yaml

    body = yaml.safe_dump({"train_rec": json.loads(cfg.model_dump_json())}, sort_keys=False)
    with atomic_path(path) as tmp:
        tmp.write_text(f"# {comment}\n{body}")


def print_summary(table: pl.DataFrame, importances: dict[str, float]) -> None:
    from rich.table import Table

    out = Table(title="tune: best trials (validation NDCG@10)")
    params = [c for c in table.columns if c not in ("number", "state", "value", "run", "last_step", "seconds")]
    for col in ("trial", "state", "val NDCG@10", *params):
        out.add_column(col, justify="right")
    top = table.sort("value", descending=True, nulls_last=True).head(10)
    for row in top.iter_rows(named=True):
        value = "-" if row["value"] is None else f"{row['value']:.4f}"
        cells = [_fmt(row[p]) for p in params]
        out.add_row(str(row["number"]), row["state"], value, *cells)
    console.print(out)
    if importances:
        console.print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in importances.items()))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
