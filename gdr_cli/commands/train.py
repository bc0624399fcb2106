"""`gdr train`: parse options, resolve every stage's config from one preset, call `stages.train.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

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
from gdr_cli.config import resolve, split_sections
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.train_gen import TrainGenConfig as C


def train(
    dataset: DatasetArg,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    view: Annotated[
        Literal["item", "social", "both"],
        typer.Option(
            "--view",
            help="What to train: 'item' (next item), 'social' (next friend) or 'both' (the two, round by round).",
        ),
    ] = "item",
    rounds: Annotated[int | None, flag(C, "rounds", "--rounds")] = None,
    id_epochs: Annotated[int | None, flag(C, "id_epochs", "--id-epochs")] = None,
    rec_epochs: Annotated[int | None, flag(C, "rec_epochs", "--rec-epochs")] = None,
    id_len: Annotated[int | None, flag(C, "id_len", "--id-len")] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            "--max-minutes",
            help="Wall-clock budget of each training phase in minutes (generator and recommender loops).",
        ),
    ] = None,
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
    raw_input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            help="Raw data for `preprocess` when the processed data is missing (see `gdr preprocess --help`).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue at the round (and phase checkpoint) where an interrupted `gdr train` stopped."
        ),
    ] = False,
) -> None:
    """--set keys name their stage section: --set train_gen.rounds=3, --set sample.k=20."""
    from stages import train as stage
    from stages.config.evaluate import EvaluateConfig
    from stages.config.preprocess import PreprocessConfig
    from stages.config.sample import SampleConfig

    sections = split_sections(set_)
    flags = {"rounds": rounds, "id_epochs": id_epochs, "rec_epochs": rec_epochs, "id_len": id_len, "seed": seed,
             "generator.train.max_minutes": max_minutes, "recommender.train.max_minutes": max_minutes}  # fmt: skip
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
    gen = resolve(C, section="train_gen", config_file=config, sets=sections.pop("train_gen", None), flags=flags)
    pre = resolve(PreprocessConfig, section="preprocess", config_file=config, sets=sections.pop("preprocess", None))
    sample = resolve(SampleConfig, section="sample", config_file=config, sets=sections.pop("sample", None))
    evaluate = resolve(EvaluateConfig, section="evaluate", config_file=config, sets=sections.pop("evaluate", None))
    if sections:
        from gdr_cli.errors import GdrError

        raise GdrError(
            f"--set key of unknown section {next(iter(sections))!r}",
            fix="use train_gen.*, preprocess.*, sample.* or evaluate.*",
        )
    stage.run(dataset=dataset, data_dir=data_dir, view=view, gen=gen, preprocess=pre, sample=sample, evaluate=evaluate,
              resume=resume, raw_input=raw_input)  # fmt: skip
