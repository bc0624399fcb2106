"""`gdr preprocess`: parse options, resolve the config, call `stages.preprocess.run`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gdr_cli.config import resolve
from gdr_cli.options import ConfigOpt, DataDir, SetOpt, flag
from stages.config.preprocess import PreprocessConfig as C

SOURCE_HELP = (
    "Raw source: movielens-100k (default download), movielens-1m, amazon-books, amazon-2014 (--category), "
    "lastfm-2k, sequences (user_sequence.txt folder), recbole (atomic files), interactions (CSV/TSV/Parquet "
    "with --user-col/--item-col/--time-col), synthetic (seeded generator, --set synthetic.users=...)."
)


def preprocess(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP, show_default=False)] = "movielens-100k",
    input: Annotated[
        Path | None,
        typer.Option(
            "--input", "-i", help="Raw file or folder; default: <data-dir>/raw/<dataset>/, downloaded where possible."
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Dataset name (folder under the data root); default: the source name (amazon-2014: amazon-2014-<category>).",
        ),
    ] = None,
    data_dir: DataDir = Path("data"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    min_user: Annotated[int | None, flag(C, "min_user_interactions", "--min-user")] = None,
    min_item: Annotated[int | None, flag(C, "min_item_interactions", "--min-item")] = None,
    category: Annotated[str | None, flag(C, "category", "--category")] = None,
    user_col: Annotated[str | None, flag(C, "user_col", "--user-col")] = None,
    item_col: Annotated[str | None, flag(C, "item_col", "--item-col")] = None,
    time_col: Annotated[str | None, flag(C, "time_col", "--time-col")] = None,
    sep: Annotated[str | None, flag(C, "sep", "--sep")] = None,
    seed: Annotated[int | None, flag(C, "seed", "--seed")] = None,
) -> None:
    """Raw dumps or your own logs -> clean interactions, item text, social graph, leave-one-out splits."""
    from stages import preprocess as stage

    flags = {
        "min_user_interactions": min_user,
        "min_item_interactions": min_item,
        "category": category,
        "user_col": user_col,
        "item_col": item_col,
        "time_col": time_col,
        "sep": sep,
        "seed": seed,
    }
    cfg = resolve(C, section="preprocess", config_file=config, sets=set_, flags=flags)
    stage.run(source=source, data_dir=data_dir, config=cfg, input=input, name=name)
