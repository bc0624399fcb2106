"""`gdr train-gen`: parse options, resolve the config, call `stages.train_gen.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.commands.corruption_flags import (
    DiffusionBetaMax,
    DiffusionCrossProb,
    DiffusionTimesteps,
    LambdaKl,
    LambdaMask,
    NoiseHeadDropout,
    OtherViewIds,
    OtherViewRun,
    UseDiffusion,
    corruption_flags,
)
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
    use_diffusion: UseDiffusion = None,
    diffusion_timesteps: DiffusionTimesteps = None,
    diffusion_beta_max: DiffusionBetaMax = None,
    diffusion_cross_prob: DiffusionCrossProb = None,
    lambda_mask: LambdaMask = None,
    lambda_kl: LambdaKl = None,
    noise_head_dropout: NoiseHeadDropout = None,
    other_view_run: OtherViewRun = None,
    other_view_ids: OtherViewIds = None,
    name_prefix: Annotated[str | None, flag(C, "name_prefix", "--name-prefix")] = None,
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
    flags.update(
        corruption_flags(
            use_diffusion=use_diffusion,
            diffusion_timesteps=diffusion_timesteps,
            diffusion_beta_max=diffusion_beta_max,
            diffusion_cross_prob=diffusion_cross_prob,
            lambda_mask=lambda_mask,
            lambda_kl=lambda_kl,
            noise_head_dropout=noise_head_dropout,
            other_view_run=other_view_run,
            other_view_ids=other_view_ids,
        )
    )
    flags["name_prefix"] = name_prefix
    cfg = resolve(C, section="train_gen", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, resume=resume)
