"""`gdr sample`: parse options, resolve the config, call `stages.sample.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.sample import SampleConfig as C


def sample(
    dataset: DatasetArg,
    run: Annotated[str, typer.Option("--run", help="Trained run to sample from (its folder under runs/).")],
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Name of the recommendations; default: the run, plus '-<sampler>' for a non-default sampler.")
    ] = None,
    split: Annotated[str | None, flag(C, "split", "--split")] = None,
    k: Annotated[int | None, flag(C, "k", "--k", "-k")] = None,
    sampler: Annotated[str | None, flag(C, "sampler", "--sampler")] = None,
    beam: Annotated[int | None, flag(C, "beam", "--beam")] = None,
    digits_per_step: Annotated[int | None, flag(C, "digits_per_step", "--digits-per-step")] = None,
    steps: Annotated[int | None, flag(C, "steps", "--steps")] = None,
    strategy: Annotated[str | None, flag(C, "strategy", "--strategy")] = None,
    batch_size: Annotated[int | None, flag(C, "batch_size", "--batch-size")] = None,
    exclude_history: Annotated[bool | None, flag(C, "exclude_history", "--exclude-history/--keep-history")] = None,
    device: Annotated[str | None, flag(C, "device", "--device")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
) -> None:
    from stages import sample as stage

    flags = {
        "split": split,
        "k": k,
        "sampler": sampler,
        "beam": beam,
        "digits_per_step": digits_per_step,
        "steps": steps,
        "strategy": strategy,
        "batch_size": batch_size,
        "exclude_history": exclude_history,
        "device": device,
        "seed": seed,
    }
    cfg = resolve(C, section="sample", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, run_name=run, config=cfg, out_name=name)
