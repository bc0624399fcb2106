"""`gdr augment`: parse options, resolve the config, call `stages.augment.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.augment import AugmentConfig as C


def augment(
    dataset: DatasetArg,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    method: Annotated[str | None, flag(C, "method", "--method")] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Name of the augmented split (its folder under augmented/; train on it with "
            "--train-split augmented/NAME); default: the method.",
        ),
    ] = None,
    base: Annotated[str | None, flag(C, "base", "--base")] = None,
    min_len: Annotated[int | None, flag(C, "min_len", "--min-len")] = None,
    num_pseudo: Annotated[int | None, flag(C, "num_pseudo", "--num-pseudo")] = None,
    epochs: Annotated[int | None, flag(C, "diffuasr.epochs", "--epochs")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
) -> None:
    from stages import augment as stage

    flags = {"method": method, "base": base, "min_len": min_len, "num_pseudo": num_pseudo, "diffuasr.epochs": epochs,
             "seed": seed}  # fmt: skip
    cfg = resolve(C, section="augment", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, name=name)
