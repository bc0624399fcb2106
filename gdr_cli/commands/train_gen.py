"""`gdr train-gen`: parse options, resolve the config, call `stages.train_gen.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.train_gen import TrainGenConfig as C


def train_gen(
    dataset: DatasetArg,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    view: Annotated[str | None, flag(C, "view", "--view")] = None,
    rounds: Annotated[int | None, flag(C, "rounds", "--rounds")] = None,
    id_len: Annotated[int | None, flag(C, "id_len", "--id-len")] = None,
    id_epochs: Annotated[int | None, flag(C, "id_epochs", "--id-epochs")] = None,
    rec_epochs: Annotated[int | None, flag(C, "rec_epochs", "--rec-epochs")] = None,
    beams: Annotated[int | None, flag(C, "beams", "--beams")] = None,
    init: Annotated[str | None, flag(C, "generator.init", "--init")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue at the first round without both runs (inside a phase from its checkpoint)."
        ),
    ] = False,
) -> None:
    from stages import train_gen as stage

    flags = {"view": view, "rounds": rounds, "id_len": id_len, "id_epochs": id_epochs, "rec_epochs": rec_epochs,
             "beams": beams, "generator.init": init, "seed": seed}  # fmt: skip
    cfg = resolve(C, section="train_gen", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, resume=resume)
