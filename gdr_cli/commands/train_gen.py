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
    use_diffusion: Annotated[int | None, flag(C, "recommender.use_diffusion", "--use-diffusion")] = None,
    diffusion_timesteps: Annotated[
        int | None, flag(C, "recommender.diffusion_timesteps", "--diffusion-timesteps")
    ] = None,
    diffusion_beta_max: Annotated[
        float | None, flag(C, "recommender.diffusion_beta_max", "--diffusion-beta-max")
    ] = None,
    diffusion_cross_prob: Annotated[
        float | None, flag(C, "recommender.diffusion_cross_prob", "--diffusion-cross-prob")
    ] = None,
    lambda_mask: Annotated[float | None, flag(C, "recommender.lambda_mask", "--lambda-mask")] = None,
    lambda_kl: Annotated[float | None, flag(C, "recommender.lambda_kl", "--lambda-kl")] = None,
    noise_head_dropout: Annotated[
        float | None, flag(C, "recommender.noise_head_dropout", "--noise-head-dropout")
    ] = None,
    other_view_run: Annotated[str | None, flag(C, "recommender.other_view_run", "--other-view-run")] = None,
    other_view_ids: Annotated[str | None, flag(C, "recommender.other_view_ids", "--other-view-ids")] = None,
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
    flags.update({"recommender.use_diffusion": use_diffusion, "recommender.diffusion_timesteps": diffusion_timesteps,
                  "recommender.diffusion_beta_max": diffusion_beta_max, "recommender.diffusion_cross_prob": diffusion_cross_prob,
                  "recommender.lambda_mask": lambda_mask, "recommender.lambda_kl": lambda_kl,
                  "recommender.noise_head_dropout": noise_head_dropout, "recommender.other_view_run": other_view_run,
                  "recommender.other_view_ids": other_view_ids, "name_prefix": name_prefix})  # fmt: skip
    cfg = resolve(C, section="train_gen", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, resume=resume)
