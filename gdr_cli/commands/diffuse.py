"""`gdr diffuse`: parse options, resolve the config, call `stages.diffuse.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.diffuse import DiffuseConfig as C


def diffuse(
    dataset: DatasetArg,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    ids: Annotated[str | None, flag(C, "ids", "--ids")] = None,
    view: Annotated[str | None, flag(C, "view", "--view")] = None,
    train_split: Annotated[str | None, flag(C, "train_split", "--train-split")] = None,
    loss: Annotated[str | None, flag(C, "loss", "--loss")] = None,
    schedule: Annotated[str | None, flag(C, "schedule", "--schedule")] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Run name (its folder under runs/); default: diffusion.")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run of the same name from its checkpoint.")
    ] = False,
    max_minutes: Annotated[float | None, flag(C, "train.max_minutes", "--max-minutes")] = None,
    lr: Annotated[float | None, flag(C, "train.lr", "--lr")] = None,
    batch_size: Annotated[int | None, flag(C, "train.batch_size", "--batch-size")] = None,
    epochs: Annotated[int | None, flag(C, "train.max_epochs", "--epochs")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
    device: Annotated[str | None, flag(C, "train.device", "--device")] = None,
    augment_factor: Annotated[int | None, flag(C, "augment_factor", "--augment-factor")] = None,
    mask_prob: Annotated[float | None, flag(C, "mask_prob", "--mask-prob")] = None,
) -> None:
    from stages import diffuse as stage

    flags = {
        "ids": ids, "view": view, "train_split": train_split, "loss": loss, "schedule": schedule, "train.max_minutes": max_minutes, "train.lr": lr,
        "train.batch_size": batch_size, "train.max_epochs": epochs, "seed": seed, "train.device": device,
        "augment_factor": augment_factor, "mask_prob": mask_prob,
    }  # fmt: skip
    cfg = resolve(C, section="diffuse", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, run_name=run, resume=resume)
