"""`gdr build-ids`: parse options, resolve the config, call `stages.build_ids.run`."""

from __future__ import annotations

from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, DatasetArg, SetOpt, flag
from stages.config.build_ids import BuildIdsConfig as C


def build_ids(
    dataset: DatasetArg,
    data_dir: DataDir = "data",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    method: Annotated[str | None, flag(C, "method", "--method")] = None,
    ids: Annotated[
        str | None,
        typer.Option(
            "--ids", help="ID-set name (its folder under ids/); default: the method, plus '-social' for --view social."
        ),
    ] = None,
    view: Annotated[str | None, flag(C, "view", "--view")] = None,
    levels: Annotated[int | None, flag(C, "levels", "--levels")] = None,
    codebook: Annotated[str | None, flag(C, "codebook", "--codebook")] = None,
    embedder: Annotated[str | None, flag(C, "embed.embedder", "--embedder")] = None,
    source: Annotated[str | None, flag(C, "embed.source", "--source")] = None,
    from_run: Annotated[str | None, flag(C, "embed.from_run", "--from-run")] = None,
    balanced: Annotated[bool | None, flag(C, "kmeans.balanced", "--balanced/--no-balanced")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
) -> None:
    from stages import build_ids as stage

    flags = {
        "method": method,
        "view": view,
        "levels": levels,
        "codebook": codebook,
        "embed.embedder": embedder,
        "embed.source": source,
        "embed.from_run": from_run,
        "kmeans.balanced": balanced,
        "seed": seed,
    }
    cfg = resolve(C, section="build_ids", config_file=config, sets=set_, flags=flags)
    stage.run(dataset=dataset, data_dir=data_dir, config=cfg, ids=ids)
