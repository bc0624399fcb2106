"""RecBole atomic files: `<name>.inter` (+ optional `.item`, `.net`), tab-separated, typed headers.

Headers look like `user_id:token	item_id:token	rating:float	timestamp:float`. The user and item
columns are the first `token` fields whose names contain "user" / "item"; the time column is
`timestamp` (float or int; without one, file order is time). Item text joins every other
`token`/`token_seq` field of the `.item` file ("Toy Story, 1995, Animation Children's Comedy")
except `item_code` (the ID codes `gdr export --ids` writes). The knowledge graph's attributes are the
`.item` token / token_seq fields that are not free text (`is_attribute`): in RecBole's ml-100k,
`release_year` and `class` (the genres).
A RecBole knowledge graph (`.kg`: head_id, relation_id, tail_id; `.link`: item_id, entity_id) adds
the edges whose head is an item's entity (item -> relation -> tail); `gdr export --format recbole`
writes the kg table that way (each item its own entity). The `.net` file's first two `token` fields are (user, friend). `.item` / `.net` files that are not
UTF-8, have a line with fewer fields than the header or an empty id fail with the file and line,
as the `.inter` file does. `.user` files are not read (no table keeps user features).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import polars as pl

from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.data.bundle import ATTRIBUTES_SCHEMA, RawBundle
from stages.data.sources.common import diagnose_delimited, find_input, first_line, read_side, scan_delimited

TEXT_WORDS = ("title", "name", "text", "desc", "review")
"""`.item` fields whose name holds one of these are free text: item text, never knowledge-graph attributes."""


def atomic_files(input: Path | None, cache: Path) -> Path:
    """The `.inter` file: `input` itself, or the one in the folder `input` (or `cache`)."""
    if input is not None and input.is_file():
        if input.suffix != ".inter":
            raise GdrError("expected a RecBole .inter file", where=str(input), fix="pass the .inter file or its folder")
        return input
    folder = input if input is not None else cache
    inters = sorted(folder.glob("*.inter")) if folder.is_dir() else []
    if not inters:
        find_input(input, cache, ["<name>.inter"], "RecBole .inter file")
    preferred = [p for p in inters if p.stem == folder.name]
    return (preferred or inters)[0]


def header(path: Path) -> list[tuple[str, str]]:
    """[(field name, type)] of an atomic file's header line."""
    fields = []
    for col, raw in enumerate(first_line(path).split("\t"), start=1):
        name, sep, kind = raw.strip().partition(":")
        if not sep or kind not in ("token", "token_seq", "float", "float_seq"):
            raise GdrError(
                f"bad RecBole header field {raw.strip()!r}",
                where=f"{path}:1:{col}",
                fix="atomic files are tab-separated with headers like user_id:token (is the separator a tab?)",
            )
        fields.append((name, kind))
    return fields


def _field(fields: list[tuple[str, str]], word: str, path: Path) -> int:
    for idx, (name, kind) in enumerate(fields):
        if word in name and kind == "token":
            return idx
    raise GdrError(f"no {word} column (a :token field named like {word}_id)", where=f"{path}:1", fix="check the header line")


def read_inter(path: Path) -> tuple[pl.LazyFrame, Callable[[], None]]:
    fields = header(path)
    cols = {_field(fields, "user", path): "user", _field(fields, "item", path): "item"}
    names = [n for n, _ in fields]
    ints = {}
    if "timestamp" in names:
        cols[names.index("timestamp")] = "timestamp"
        ints = {names.index("timestamp"): "timestamp"}
    lf = scan_delimited(path, "\t", cols, header=True, ts_float=True)
    diagnose = partial(diagnose_delimited, path, "\t", len(fields), ints, header=True, allow_float=True)
    return lf, diagnose


def is_attribute(name: str, kind: str) -> bool:
    """A `.item` field that names item attributes (knowledge-graph entities): a token or token_seq field
    that is not free text (title, name, description) nor the ID codes gdr exports."""
    return kind in ("token", "token_seq") and name != "item_code" and not any(w in name for w in TEXT_WORDS)


def read_item(path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(items raw_id/text, attributes ATTRIBUTES_SCHEMA): every attribute field is a relation named after
    it; a token field gives one entity, a token_seq field one per space-separated token."""
    fields = header(path)
    key = _field(fields, "item", path)
    text_cols = [f"_{i}" for i, (n, k) in enumerate(fields) if i != key and k in ("token", "token_seq") and n != "item_code"]
    frame = read_side(path, "\t", len(fields), {i: f"_{i}" for i in range(len(fields))}, keys=[f"_{key}"],
                      names=" ".join(f"{n}:{k}" for n, k in fields))
    text = pl.concat_str([pl.col(c).str.strip_chars() for c in text_cols], separator=", ", ignore_nulls=True) if text_cols else pl.lit(None, pl.String)
    items = frame.select(pl.col(f"_{key}").alias("raw_id"), pl.when(text != "").then(text).alias("text"))  # no text: null
    parts = [
        frame.select(
            pl.col(f"_{key}").alias("raw_id"),
            pl.lit(n).alias("relation"),
            (pl.col(f"_{i}").str.split(" ") if k == "token_seq" else pl.concat_list(pl.col(f"_{i}"))).alias("entity"),
        ).explode("entity")
        for i, (n, k) in enumerate(fields)
        if i != key and is_attribute(n, k)
    ]
    attributes = pl.concat(parts) if parts else pl.DataFrame(schema=ATTRIBUTES_SCHEMA)
    return items, attributes.cast(ATTRIBUTES_SCHEMA)


def read_net(path: Path) -> pl.DataFrame:
    fields = header(path)
    tokens = [i for i, (_, k) in enumerate(fields) if k == "token"][:2]
    if len(tokens) < 2:
        raise GdrError("a .net file needs two :token fields (user, friend)", where=f"{path}:1", fix="check the header line")
    return read_side(path, "\t", len(fields), {tokens[0]: "user", tokens[1]: "friend"}, keys=["user", "friend"],
                     names=" ".join(f"{n}:{k}" for n, k in fields))


def _named(fields: list[tuple[str, str]], word: str, fallback: int, path: Path) -> int:
    """Index of the first `token` field whose name holds `word`, else field `fallback` (a positional header)."""
    hits = [i for i, (name, kind) in enumerate(fields) if word in name and kind == "token"]
    if hits:
        return hits[0]
    if fallback < len(fields):
        return fallback
    raise GdrError(f"no {word} field", where=f"{path}:1", fix=f"the header needs a {word}_id:token field")


def read_kg(kg: Path, link: Path) -> pl.DataFrame:
    """Item -> attribute edges (ATTRIBUTES_SCHEMA) of a `.kg` file whose heads are items' entities in `.link`."""
    if not link.is_file():
        raise GdrError("a .kg file needs its .link file (item_id:token entity_id:token)", where=str(kg),
                       fix=f"add {link.name}, or remove {kg.name}")  # fmt: skip
    kf, lf = header(kg), header(link)
    cols = {_named(kf, "head", 0, kg): "head", _named(kf, "relation", 1, kg): "relation", _named(kf, "tail", 2, kg): "entity"}
    edges = read_side(kg, "\t", len(kf), cols, keys=["head", "relation"], names=" ".join(f"{n}:{k}" for n, k in kf))
    pairs = read_side(link, "\t", len(lf), {_named(lf, "item", 0, link): "raw_id", _named(lf, "entity", 1, link): "head"},
                      keys=["raw_id", "head"], names=" ".join(f"{n}:{k}" for n, k in lf))  # fmt: skip
    return pairs.join(edges, on="head", how="inner", maintain_order="left").select(list(ATTRIBUTES_SCHEMA))


def read_atomic(inter: Path) -> RawBundle:
    """A bundle from `<name>.inter` and its optional `.item` / `.net` / `.kg` + `.link` siblings."""
    lf, diagnose = read_inter(inter)
    item, net, kg = inter.with_suffix(".item"), inter.with_suffix(".net"), inter.with_suffix(".kg")
    items, attributes = read_item(item) if item.is_file() else (None, None)
    if kg.is_file():
        graph = read_kg(kg, inter.with_suffix(".link"))
        attributes = graph if attributes is None else pl.concat([attributes, graph])
    return RawBundle(
        interactions=lf,
        items=items,
        social=read_net(net) if net.is_file() else None,
        origin=str(inter),
        diagnose=diagnose,
        attributes=attributes,
    )


def read(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    return read_atomic(atomic_files(input, cache))
