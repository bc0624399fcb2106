"""Source readers, one module per raw format, and the factory that picks one by name.

Every reader is `read(input: Path | None, *, config, cache: Path) -> RawBundle`, where `cache`
is the raw folder `<root>/raw/<default dataset name>/` used when `--input` is not given.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.data.bundle import RawBundle

READERS: dict[str, str] = {
    "movielens-100k": "movielens:read_100k",
    "movielens-1m": "movielens:read_1m",
    "amazon-books": "amazon:read_books",
    "amazon-2014": "amazon:read_2014",
    "lastfm-2k": "lastfm:read",
    "sequences": "seqtext:read",
    "recbole": "recbole:read",
    "interactions": "table:read",
    "synthetic": "synthetic:read",
}
"""Source name -> `module:function` under `stages.data.sources` (imported on use)."""


def reader(source: str) -> Callable[..., RawBundle]:
    """The reader of `source`; an unknown name is an error listing the known ones."""
    if source not in READERS:
        raise GdrError(f"unknown source {source!r}", fix=f"sources are: {', '.join(READERS)}")
    module, func = READERS[source].split(":")
    return getattr(importlib.import_module(f"stages.data.sources.{module}"), func)


def default_name(source: str, config: PreprocessConfig) -> str:
    """Dataset name when `--name` is not given: the source name (amazon-2014: amazon-2014-<category>)."""
    reader(source)
    if source == "amazon-2014":
        if not config.category:
            raise GdrError("amazon-2014 needs a category", fix="pass --category NAME, e.g. --category Beauty")
        return f"amazon-2014-{config.category.lower()}"
    return source


def read_source(source: str, *, input: Path | None, config: PreprocessConfig, cache: Path) -> RawBundle:
    return reader(source)(input, config=config, cache=cache)
