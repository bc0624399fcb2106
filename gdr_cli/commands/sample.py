"""`gdr sample`: parse options, resolve the config, call `stages.sample.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import parse_sets, resolve
from gdr_cli.errors import GdrError
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.sample import SampleConfig as C


def sample(
    dataset: DatasetArg,
    run: Annotated[str, typer.Option("--run", help="Trained run to sample from (its folder under runs/).")],
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Name of the recommendations; default: the run, plus '-<sampler>' for a non-default sampler."
        ),
    ] = None,
    split: Annotated[str | None, flag(C, "split", "--split")] = None,
    view: Annotated[str | None, flag(C, "view", "--view")] = None,
    k: Annotated[int | None, flag(C, "k", "--k", "-k")] = None,
    sampler: Annotated[str | None, flag(C, "sampler", "--sampler")] = None,
    beam: Annotated[int | None, flag(C, "beam", "--beam")] = None,
    first_beam: Annotated[int | None, flag(C, "first_beam", "--first-beam")] = None,
    digits_per_step: Annotated[int | None, flag(C, "digits_per_step", "--digits-per-step")] = None,
    whole_code: Annotated[str | None, flag(C, "whole_code", "--whole-code")] = None,
    renormalize: Annotated[bool | None, flag(C, "renormalize", "--renormalize/--raw-scores")] = None,
    steps: Annotated[int | None, flag(C, "steps", "--steps")] = None,
    strategy: Annotated[str | None, flag(C, "strategy", "--strategy")] = None,
    top_k: Annotated[int | None, flag(C, "top_k", "--top-k")] = None,
    top_p: Annotated[float | None, flag(C, "top_p", "--top-p")] = None,
    temperature: Annotated[float | None, flag(C, "temperature", "--temperature")] = None,
    order: Annotated[str | None, flag(C, "order", "--order")] = None,
    batch_size: Annotated[int | None, flag(C, "batch_size", "--batch-size")] = None,
    exclude_history: Annotated[bool | None, flag(C, "exclude_history", "--exclude-history/--keep-history")] = None,
    constrained: Annotated[bool | None, flag(C, "constrained", "--constrained/--no-constraint")] = None,
    device: Annotated[str | None, flag(C, "device", "--device")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
) -> None:
    from stages import sample as stage

    flags = {
        "split": split,
        "view": view,
        "k": k,
        "sampler": sampler,
        "beam": beam,
        "first_beam": first_beam,
        "digits_per_step": digits_per_step,
        "whole_code": whole_code,
        "renormalize": renormalize,
        "steps": steps,
        "strategy": strategy,
        "top_k": top_k,
        "top_p": top_p,
        "temperature": temperature,
        "order": parse_order(order),
        "batch_size": batch_size,
        "exclude_history": exclude_history,
        "constrained": constrained,
        "device": device,
        "seed": seed,
    }
    cfg = resolve(C, section="sample", config_file=config, sets=set_, flags=flags)
    given = set(parse_sets(set_)) | {key for key, value in flags.items() if value is not None}
    stage.run(dataset=dataset, data_dir=data_dir, run_name=run, config=cfg, out_name=name, given=given)


def parse_order(text: str | None) -> list[int] | str | None:
    """`--order 3,0,1,2` -> [3, 0, 1, 2]; `--order random` stays 'random'."""
    if text is None or text.strip() == "random":
        return None if text is None else "random"
    try:
        return [int(part) for part in text.replace(" ", "").strip("[]").split(",")]
    except ValueError:
        raise GdrError(f"bad --order {text!r}", fix="give digit positions like 3,0,1,2, or 'random'") from None
