"""`gdr evaluate`: parse options, resolve the config, call `stages.evaluate.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.evaluate import EvaluateConfig as C


def evaluate(
    dataset: DatasetArg,
    run: Annotated[
        list[str] | None,
        typer.Option("--run", help="Recommendations to score (repeatable); default: all for the split."),
    ] = None,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    split: Annotated[str | None, flag(C, "split", "--split")] = None,
    view: Annotated[str | None, flag(C, "view", "--view")] = None,
    report: Annotated[bool | None, flag(C, "report", "--report/--no-report")] = None,
    bootstrap: Annotated[int | None, flag(C, "bootstrap", "--bootstrap")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as JSON on stdout (the table goes to stderr otherwise).")
    ] = False,
) -> None:
    from stages import evaluate as stage

    cfg = resolve(
        C,
        section="evaluate",
        config_file=config,
        sets=set_,
        flags={"split": split, "view": view, "report": report, "bootstrap": bootstrap, "seed": seed},
    )
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, runs=run, as_json=as_json)
