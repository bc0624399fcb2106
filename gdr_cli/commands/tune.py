"""`gdr tune`: parse options, resolve the tune and train_rec configs, call `stages.tune.run`."""

from __future__ import annotations

from typing import Annotated

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.train_rec import TrainRecConfig as R
from stages.config.tune import TuneConfig as C


def tune(
    dataset: DatasetArg,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    n_trials: Annotated[int | None, flag(C, "n_trials", "--n-trials")] = None,
    timeout: Annotated[float | None, flag(C, "timeout", "--timeout")] = None,
    study_name: Annotated[str | None, flag(C, "study_name", "--study-name")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
    model: Annotated[str | None, flag(R, "model", "--model")] = None,
    view: Annotated[str | None, flag(R, "view", "--view")] = None,
    ids: Annotated[str | None, flag(R, "ids", "--ids")] = None,
    epochs: Annotated[int | None, flag(R, "train.max_epochs", "--epochs")] = None,
) -> None:
    """Trials = train-rec runs configured by the `train_rec` section of --config; --set sets `tune` keys."""
    from stages import tune as stage

    cfg = resolve(C, section="tune", config_file=config, sets=set_,
                  flags={"n_trials": n_trials, "timeout": timeout, "study_name": study_name, "seed": seed})  # fmt: skip
    base = resolve(R, section="train_rec", config_file=config, sets=None,
                   flags={"model": model, "view": view, "ids": ids, "train.max_epochs": epochs})  # fmt: skip
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, base=base)
