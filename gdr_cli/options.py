"""Typer option factories shared by every command (only `gdr_cli` imports typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel

from gdr_cli.config import field_help

DatasetArg = Annotated[str, typer.Argument(help="Dataset name (its folder under the data root).", show_default=False)]
DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="GDR_DATA_DIR", help="Data root holding raw inputs and every artifact."),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config file or preset name in configs/ (e.g. tiny, default)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Override a config key: --set train.lr=1e-3 (repeatable; beats the file, loses to flags)."
    ),
]


def flag(cls: type[BaseModel], path: str, *names: str) -> Any:
    """A typed option for config field `path` whose help is the field's description and default.

    The option's own default is None so that an unset flag never overrides the config file.
    Use it inside `Annotated[T | None, flag(...)] = None`: there typer reads the first positional
    argument as a flag name, so the names go first (a `None` default there breaks typer >= 0.12).
    """
    return typer.Option(*names, help=field_help(cls, path), show_default=False)
