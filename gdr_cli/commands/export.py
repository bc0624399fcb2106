"""`gdr export`: parse options, call `stages.export.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gdr_cli.options import DataDir, DatasetArg


def export(
    dataset: DatasetArg,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="recbole (.inter/.item/.net atomic files), sequences (IDGenRec/SASRec user_sequence.txt folder) "
            "or parquet (tables with raw ids; --recs adds recommendations).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (created; replaced if an earlier export).")],
    ids: Annotated[str | None, typer.Option("--ids", help="Also export this ID set's codes.")] = None,
    recs: Annotated[
        str | None, typer.Option("--recs", help="parquet only: also export this run's recommendations as recs.parquet.")
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Split of the --recs recommendations (valid or test).")
    ] = "test",
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even if it is a non-empty folder gdr export did not write.")
    ] = False,
    data_dir: DataDir = Path("data"),
) -> None:
    from stages import export as stage

    stage.run(dataset=dataset, data_dir=data_dir, format=format, out=out, ids=ids, recs=recs, split=split, force=force)
