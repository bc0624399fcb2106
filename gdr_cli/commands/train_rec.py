"""`gdr train-rec`: parse options, resolve the config, call `stages.train_rec.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.train_rec import TrainRecConfig as C


def train_rec(
    dataset: DatasetArg,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[str | None, flag(C, "model", "--model")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Run name (its folder under runs/); default: the model's name.")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
) -> None:
    from stages import train_rec as stage

    cfg = resolve(C, section="train_rec", config_file=config, sets=set_, flags={"model": model, "seed": seed})
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, run_name=run)
