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
    view: Annotated[str | None, flag(C, "view", "--view")] = None,
    train_split: Annotated[str | None, flag(C, "train_split", "--train-split")] = None,
    ids: Annotated[str | None, flag(C, "ids", "--ids")] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Run name (its folder under runs/); default: the model's name.")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue an interrupted run from runs/.<run>.work/ (same config and inputs)."),
    ] = False,
    plugin: Annotated[str | None, flag(C, "sasrec.plugin", "--plugin")] = None,
    plugin_run: Annotated[str | None, flag(C, "sasrec.pdrec.run", "--plugin-run")] = None,
    reweight: Annotated[bool | None, flag(C, "sasrec.pdrec.reweight", "--reweight/--no-reweight")] = None,
    soft_positives: Annotated[
        bool | None, flag(C, "sasrec.pdrec.soft_positives", "--soft-positives/--no-soft-positives")
    ] = None,
    tail_negatives: Annotated[
        bool | None, flag(C, "sasrec.pdrec.tail_negatives", "--tail-negatives/--no-tail-negatives")
    ] = None,
    init: Annotated[str | None, flag(C, "tiger.init", "--init")] = None,
    interest_diffusion: Annotated[
        bool | None, flag(C, "diffnet.interest_diffusion", "--interest-diffusion/--no-interest-diffusion")
    ] = None,
    max_minutes: Annotated[float | None, flag(C, "train.max_minutes", "--max-minutes")] = None,
    lr: Annotated[float | None, flag(C, "train.lr", "--lr")] = None,
    batch_size: Annotated[int | None, flag(C, "train.batch_size", "--batch-size")] = None,
    epochs: Annotated[int | None, flag(C, "train.max_epochs", "--epochs")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
    device: Annotated[str | None, flag(C, "train.device", "--device")] = None,
    use_diffusion: Annotated[int | None, flag(C, "tiger.use_diffusion", "--use-diffusion")] = None,
    diffusion_timesteps: Annotated[int | None, flag(C, "tiger.diffusion_timesteps", "--diffusion-timesteps")] = None,
    diffusion_beta_max: Annotated[float | None, flag(C, "tiger.diffusion_beta_max", "--diffusion-beta-max")] = None,
    diffusion_cross_prob: Annotated[
        float | None, flag(C, "tiger.diffusion_cross_prob", "--diffusion-cross-prob")
    ] = None,
    lambda_mask: Annotated[float | None, flag(C, "tiger.lambda_mask", "--lambda-mask")] = None,
    lambda_kl: Annotated[float | None, flag(C, "tiger.lambda_kl", "--lambda-kl")] = None,
    noise_head_dropout: Annotated[float | None, flag(C, "tiger.noise_head_dropout", "--noise-head-dropout")] = None,
    other_view_run: Annotated[str | None, flag(C, "tiger.other_view_run", "--other-view-run")] = None,
    other_view_ids: Annotated[str | None, flag(C, "tiger.other_view_ids", "--other-view-ids")] = None,
) -> None:
    from stages import train_rec as stage

    flags = {
        "model": model,
        "view": view,
        "train_split": train_split,
        "ids": ids,
        "sasrec.plugin": plugin,
        "sasrec.pdrec.run": plugin_run,
        "sasrec.pdrec.reweight": reweight,
        "sasrec.pdrec.soft_positives": soft_positives,
        "sasrec.pdrec.tail_negatives": tail_negatives,
        "tiger.init": init,
        "diffnet.interest_diffusion": interest_diffusion,
        "train.max_minutes": max_minutes,
        "train.lr": lr,
        "train.batch_size": batch_size,
        "train.max_epochs": epochs,
        "seed": seed,
        "train.device": device,
        "tiger.use_diffusion": use_diffusion,
        "tiger.diffusion_timesteps": diffusion_timesteps,
        "tiger.diffusion_beta_max": diffusion_beta_max,
        "tiger.diffusion_cross_prob": diffusion_cross_prob,
        "tiger.lambda_mask": lambda_mask,
        "tiger.lambda_kl": lambda_kl,
        "tiger.noise_head_dropout": noise_head_dropout,
        "tiger.other_view_run": other_view_run,
        "tiger.other_view_ids": other_view_ids,
    }
    cfg = resolve(C, section="train_rec", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, run_name=run, resume=resume)
