"""MovieLens 100K and 1M: official GroupLens files, RecBole atomic copies, or a fetched cache.

100K: `u.data` (tab: user item rating timestamp) + `u.item` (pipe-separated, latin-1; text =
title and genres; knowledge-graph attributes = genres and release year), or RecBole's
`ml-100k.inter`/`.item`. Without `--input` the raw cache
`<root>/raw/movielens-100k/` is used; when empty, the official zip is downloaded, and where that
fails the copy inside the `recbole` wheel on PyPI is extracted instead.
1M: `ratings.dat` (`::`-separated) + `movies.dat` (latin-1, `id::title::genres`; attributes =
genres and the year in the title's trailing "(1995)").
"""

from __future__ import annotations

from functools import partial
import re
from pathlib import Path

import polars as pl

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.data.bundle import ATTRIBUTES_SCHEMA, RawBundle
from stages.data.sources import download, recbole
from stages.data.sources.common import check_fields, diagnose_delimited, find_input, require_file, scan_delimited

ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBERS = {f"recbole/dataset_example/ml-100k/ml-100k.{ext}": f"ml-100k.{ext}" for ext in ("inter", "item", "user")}
YEAR = re.compile(r"\((\d{4})\)\s*$")
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def fetch_100k(cache: Path, timeout: float) -> Path:
    """Fill `cache` with MovieLens 100K: GroupLens zip first, the recbole wheel's copy second."""
    try:
        download.fetch_zip(ML100K_URL, {"ml-100k/u.data": "u.data", "ml-100k/u.item": "u.item"}, cache, timeout)
        return cache
    except OSError as exc:
        console.print(f"GroupLens download failed ({exc}); trying the copy in the {RECBOLE_WHEEL} wheel on PyPI")
        first = exc
    try:
        download.fetch_from_wheel(RECBOLE_WHEEL, RECBOLE_MEMBERS, cache, timeout)
    except OSError as exc:
        raise GdrError(
            f"could not fetch MovieLens 100K (GroupLens: {first}; PyPI: {exc})",
            where=str(cache),
            fix=f"download {ML100K_URL}, unzip it and pass --input ml-100k/",
        ) from None
    console.print(f"cached MovieLens 100K (RecBole atomic files) in {cache}")
    return cache


def _official_100k(folder: Path) -> RawBundle:
    data = require_file(folder / "u.data", "MovieLens u.data", "pass the unzipped ml-100k folder")
    check_fields(data, "\t", 4, names="user item rating timestamp")
    lf = scan_delimited(data, "\t", {0: "user", 1: "item", 3: "timestamp"}, header=False)
    items = attributes = None
    if (folder / "u.item").is_file():
        rows = [line.rstrip("\r\n").split("|") for line in (folder / "u.item").read_text(encoding="latin-1").splitlines() if line.strip()]
        texts, edges = [], []
        for r in rows:
            genres = [g for g, flag in zip(GENRES, r[5:], strict=False) if flag == "1"]
            texts.append(", ".join([r[1], *genres]) if len(r) > 1 else None)
            edges += [(r[0], "genre", g) for g in genres]
            if len(r) > 2 and r[2].strip()[-4:].isdigit():  # release date 01-Jan-1995
                edges.append((r[0], "year", r[2].strip()[-4:]))
        items = pl.DataFrame({"raw_id": [r[0] for r in rows], "text": texts}, schema={"raw_id": pl.String, "text": pl.String})
        attributes = pl.DataFrame(edges, schema=ATTRIBUTES_SCHEMA, orient="row")
    diagnose = partial(diagnose_delimited, data, "\t", 4, {3: "timestamp"}, header=False)
    return RawBundle(interactions=lf, items=items, social=None, origin=str(data), diagnose=diagnose, attributes=attributes)


def read_100k(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    if input is not None and input.is_file():
        return recbole.read_atomic(input) if input.suffix == ".inter" else _official_100k(input.parent)
    folder = input if input is not None else cache
    if folder.is_dir() and (folder / "ml-100k").is_dir():
        folder = folder / "ml-100k"
    if input is None and not ((folder / "u.data").is_file() or any(folder.glob("*.inter"))):
        folder = fetch_100k(cache, config.download_timeout)
    if (folder / "u.data").is_file():
        return _official_100k(folder)
    return recbole.read_atomic(recbole.atomic_files(folder, cache))


def read_1m(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    folder = input if input is not None else cache
    if folder.is_dir() and (folder / "ml-1m").is_dir():
        folder = folder / "ml-1m"
    if input is None and not (folder / "ratings.dat").is_file():
        try:
            download.fetch_zip(ML1M_URL, {"ml-1m/ratings.dat": "ratings.dat", "ml-1m/movies.dat": "movies.dat"}, cache,
                               config.download_timeout)
        except OSError as exc:
            raise GdrError(f"could not download MovieLens 1M ({exc})", where=str(cache),
                           fix=f"download {ML1M_URL}, unzip it and pass --input ml-1m/") from None
    folder = find_input(folder, cache, ["ratings.dat"], "MovieLens 1M ratings.dat")
    ratings = require_file(folder / "ratings.dat", "MovieLens ratings.dat", "pass the unzipped ml-1m folder")
    check_fields(ratings, "::", 4, names="UserID::MovieID::Rating::Timestamp")
    # "::" is two one-byte separators with an empty field between: fields 0, 2, 4, 6
    lf = scan_delimited(ratings, ":", {0: "user", 2: "item", 6: "timestamp"}, header=False)
    items = attributes = None
    movies = folder / "movies.dat"
    if movies.is_file():
        rows = [line.split("::") for line in movies.read_text(encoding="latin-1").splitlines() if line.strip()]
        items = pl.DataFrame(
            {"raw_id": [r[0] for r in rows],
             "text": [", ".join([r[1], *r[2].split("|")]) if len(r) > 2 else None for r in rows]},
            schema={"raw_id": pl.String, "text": pl.String},
        )
        edges = [(r[0], "genre", g) for r in rows if len(r) > 2 for g in r[2].split("|")]
        edges += [(r[0], "year", m.group(1)) for r in rows if len(r) > 1 and (m := YEAR.search(r[1]))]
        attributes = pl.DataFrame(edges, schema=ATTRIBUTES_SCHEMA, orient="row")
    diagnose = partial(diagnose_delimited, ratings, "::", 4, {3: "timestamp"}, header=False)
    return RawBundle(interactions=lf, items=items, social=None, origin=str(ratings), diagnose=diagnose, attributes=attributes)
