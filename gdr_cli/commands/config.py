"""`gdr config`: print a stage's resolved config, every key with its description, as a loadable config file."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import BaseModel

from gdr_cli.config import render_config, resolve, split_sections
from gdr_cli.errors import GdrError
from gdr_cli.options import ConfigOpt, SetOpt


def _classes() -> dict[str, type[BaseModel]]:
    """Config section -> its model (the sections a config file may hold)."""
    from stages.config.augment import AugmentConfig
    from stages.config.build_ids import BuildIdsConfig
    from stages.config.diffuse import DiffuseConfig
    from stages.config.evaluate import EvaluateConfig
    from stages.config.preprocess import PreprocessConfig
    from stages.config.sample import SampleConfig
    from stages.config.train_gen import TrainGenConfig
    from stages.config.train_rec import TrainRecConfig
    from stages.config.tune import TuneConfig

    return {"preprocess": PreprocessConfig, "build_ids": BuildIdsConfig, "augment": AugmentConfig,
            "train_rec": TrainRecConfig, "train_gen": TrainGenConfig, "diffuse": DiffuseConfig,
            "sample": SampleConfig, "evaluate": EvaluateConfig, "tune": TuneConfig}  # fmt: skip


TRAIN = ("train_gen", "preprocess", "sample", "evaluate")
"""The sections `gdr train` reads (its --set keys name their section: --set sample.k=10)."""


def config(
    stage: Annotated[
        str,
        typer.Argument(help="Stage whose config to print (e.g. diffuse, train-rec, sample; train: its 4 sections)."),
    ],
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    classes = _classes()
    section = stage.replace("-", "_")
    if section == "train":  # the IDGenRec pipeline: every section it reads, --set keys prefixed by their section
        sets = split_sections(set_)
        for head in sets.keys() - set(TRAIN):
            raise GdrError(f"--set key of unknown section {head!r}", fix=f"use {', '.join(TRAIN)}.<key>")
        for name in TRAIN:
            cfg = resolve(classes[name], section=name, config_file=config, sets=sets.get(name))
            typer.echo(render_config(cfg, name), nl=False)
        return
    if section not in classes:
        names = ", ".join(name.replace("_", "-") for name in [*classes, "train"])
        raise GdrError(f"no stage {stage!r} has a config", fix=f"use one of: {names}")
    cfg = resolve(classes[section], section=section, config_file=config, sets=set_)
    typer.echo(render_config(cfg, section), nl=False)
