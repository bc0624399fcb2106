"""`gdr export`: a processed dataset (and optionally its ID codes and recommendations) in other tools' formats.

Formats (PROTOCOL.md §3), all keyed by the raw ids of the source, so `gdr preprocess` of the
export reproduces the same splits (tests/test_export.py checks the round trip):
- `recbole`: `<out>/<out name>.inter` (`user_id:token item_id:token timestamp:float`, rows by user
  then time; tied timestamps get fractions k/m (k-th of m tied rows) so RecBole's time ordering
  cannot reorder them, and they truncate back to the same integer), `.item` (`item_id:token
  text:token_seq`, whitespace in text collapsed to spaces), `.net` (`user_id:token friend_id:token`,
  both directions, edges ordered so that first mentions give each user's friend order back, see
  `edge_order`) when there is a social graph, and the knowledge graph (`kg.parquet`) when there is one as
  RecBole's `.kg` (`head_id:token relation_id:token tail_id:token`) + `.link` (`item_id:token
  entity_id:token`, each item its own entity: its raw id).
- `sequences`: IDGenRec / SASRec folder: `user_sequence.txt` (`user item item ...`, time order),
  `item_plain_text.txt` (`item<TAB>text`), `friend_sequence.txt` (`user friend ...`, each user's
  friends in gdr's order) when social. `preprocess` orders friends by first mention in the file,
  so the friend graph comes back whole but the friend order (social_splits) may not. The knowledge
  graph goes to `item_kg.txt` (`item<TAB>relation<TAB>entity`) when there is one.
- `parquet`: interactions (user, item, timestamp), items (raw_id, text), splits, social and kg (item,
  relation, entity) tables with raw ids as strings; with `--recs NAME` also `recs.parquet` (user, rank, item, score; item
  null = invalid code) of that run's `--split` recommendations.
`--ids NAME` adds the ID set's codes: `codes.parquet` (parquet), `item_codes.txt` (sequences,
`item c1 c2 ...`), an `item_code:token_seq` field in `.item` (recbole; the reader keeps it out of
the text). The folder is written through a staged swap with `manifest.json` last; a non-empty folder
without an export manifest is refused unless `force` (it is then replaced as a whole).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_write_text, staged_dir, write_parquet
from gdr_cli.manifest import (
    MANIFEST,
    Manifest,
    Stopwatch,
    check_fresh,
    command_line,
    input_ref,
    read_manifest,
    write_manifest,
)
from gdr_cli.paths import DataPaths
from stages.data.kg import KG_SCHEMA
from stages.inputs import Processed, open_processed

FORMATS = ("recbole", "sequences", "parquet")
SPLITS = ("valid", "test")


def _raw(frame: pl.DataFrame, col: str, ids: pl.DataFrame) -> pl.Expr:
    """Expression replacing compact ids in `col` (scalar or list) by raw ids through `ids` (id -> raw_id)."""
    lookup = ids.sort(ids.columns[0])["raw_id"]  # compact ids are 0..n-1
    keys = pl.Series(range(len(lookup)))
    if isinstance(frame.schema[col], pl.List):
        return pl.col(col).list.eval(pl.element().replace_strict(keys, lookup, return_dtype=pl.String))
    return pl.col(col).replace_strict(keys, lookup, return_dtype=pl.String)


def _one_line(text: pl.Expr) -> pl.Expr:
    return text.str.replace_all(r"\s+", " ").str.strip_chars()


def _check_tokens(frame: pl.DataFrame, col: str, what: str, fmt: str, bad_chars: str) -> None:
    """Ids must be non-empty and free of `bad_chars` (a regex class) to survive the text format `fmt`."""
    bad = frame.filter(pl.col(col).str.contains(bad_chars) | (pl.col(col) == ""))
    if bad.height:
        kind = "whitespace" if bad_chars == r"\s" else "a tab or line break"
        raise GdrError(
            f"{what} id {bad[col][0]!r} is empty or holds {kind}, which {fmt} files cannot carry",
            fix="export with --format parquet",
        )


def _check_out(out: Path, force: bool, paths: DataPaths) -> None:
    """Refuse a file, a foreign non-empty folder (unless `force`), and, always, the data root, a folder
    above it or one inside the dataset's own folder (replacing those would destroy artifacts)."""
    where, root, home = out.resolve(), paths.root.resolve(), paths.home.resolve()
    if root.is_relative_to(where) or where.is_relative_to(home):
        raise GdrError(
            "--out would replace the data root or part of the dataset's artifacts",
            where=str(out),
            fix="export to a folder outside the data root (or under another folder of it)",
        )
    if out.exists() and not out.is_dir():
        raise GdrError("--out is a file, not a folder", where=str(out), fix="give a folder path")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file() and not force:
        raise GdrError(
            "--out is a non-empty folder that gdr export did not write",
            where=str(out),
            fix="give an empty or new folder, or pass --force to replace the folder and everything in it",
        )
    if (out / MANIFEST).is_file() and not force:
        try:
            stage = Manifest.model_validate_json((out / MANIFEST).read_bytes()).stage
        except ValueError:
            stage = "?"
        if stage != "export":
            raise GdrError(
                f"--out holds a gdr {stage} artifact, not an export",
                where=str(out),
                fix="give another folder, or pass --force to replace it",
            )


def _codes(paths: DataPaths, name: str, processed: Processed) -> tuple[pl.DataFrame, str, dict]:
    """(key raw_id:str, code:list[int32]) of ID set `name`, the view ('item' or 'user') and its input ref."""
    folder = paths.ids(name)
    manifest = read_manifest(
        folder,
        what=f"ID set {name!r} of dataset {paths.dataset!r}",
        fix=f"build it first: `gdr build-ids {paths.dataset} --ids {name}`",
    )
    check_fresh(manifest, paths.root, what=f"ID set {name!r}")
    codes = pl.read_parquet(folder / "codes.parquet")
    view = codes.columns[0]
    table = processed.table("items" if view == "item" else "users").select(view, "raw_id")
    out = codes.join(table, on=view, how="left").sort(view).select("raw_id", pl.col("code"))
    return out, view, {"ids": input_ref(folder, paths.root, manifest)}


def _recs(paths: DataPaths, name: str, split: str, processed: Processed) -> tuple[pl.DataFrame, dict]:
    if split not in SPLITS:
        raise GdrError(f"unknown split {split!r}", fix=f"use one of: {', '.join(SPLITS)}")
    folder = paths.recs(name, split)
    manifest = read_manifest(
        folder,
        what=f"{split} recommendations of run {name!r}",
        fix=f"sample them first: `gdr sample {paths.dataset} --run {name} --split {split}`",
    )
    check_fresh(manifest, paths.root, what=f"{split} recommendations of run {name!r}")
    recs = pl.read_parquet(folder / "recs.parquet")
    users, items = processed.table("users"), processed.table("items")
    plain = recs.select(
        _raw(recs, "user", users).alias("user"),
        pl.col("rank"),
        pl.when(pl.col("item") >= 0).then(pl.col("item")).otherwise(None).alias("item"),
        pl.col("score"),
    )
    lookup = items.sort("item")["raw_id"]
    plain = plain.with_columns(
        pl.col("item").replace_strict(
            pl.Series(range(len(lookup)), dtype=pl.Int32), lookup, default=None, return_dtype=pl.String
        )
    )
    return plain, {"recs": input_ref(folder, paths.root, manifest)}


def edge_order(social: pl.DataFrame) -> pl.DataFrame:
    """The friend graph as rows (user, friend), each friendship once per direction, in an order whose
    first mentions give every user their friends in `social`'s order (what `preprocess` reads back).

    `social` holds both directions, sorted by user then friend order. Each undirected edge has a rank in
    both endpoints' lists; rounds place every edge that is next in both lists (such edges share no
    user, so a round's order is free). A consistent order exists (the original input's), so every
    round places at least one edge.
    """
    u = social["user"].to_numpy().astype(np.int64)
    f = social["friend"].to_numpy().astype(np.int64)
    rank = social.select(pl.int_range(pl.len()).over("user").alias("r"))["r"].to_numpy()
    lo, hi = np.minimum(u, f), np.maximum(u, f)
    n_users = int(max(u.max(), f.max())) + 1 if u.size else 0
    key = lo * n_users + hi
    order = np.lexsort((u > f, key))  # per edge: the row from lo's list, then the row from hi's list
    rank_sorted = rank[order]
    a, b = lo[order][0::2], hi[order][0::2]
    ra, rb = rank_sorted[0::2], rank_sorted[1::2]
    head = np.zeros(n_users, np.int64)
    placed = np.full(a.size, -1, np.int64)
    todo = np.arange(a.size)
    step = 0
    while todo.size:
        ready = todo[(ra[todo] == head[a[todo]]) & (rb[todo] == head[b[todo]])]
        if not ready.size:
            raise GdrError("the friend order cannot be written as one edge list", fix="export with --format parquet")
        placed[ready] = np.arange(step, step + ready.size)
        step += ready.size
        head[a[ready]] += 1
        head[b[ready]] += 1
        todo = todo[placed[todo] < 0]
    seq = np.argsort(placed)
    pairs = np.stack([np.stack([a[seq], b[seq]], 1), np.stack([b[seq], a[seq]], 1)], 1).reshape(-1, 2)
    return pl.DataFrame({"user": pairs[:, 0], "friend": pairs[:, 1]}).cast(pl.Int32)


def _inter_timestamps(inter: pl.DataFrame) -> pl.Expr:
    """Float timestamps: ties within a user get k/m (k-th of m tied rows in file order); strictly increasing."""
    k = pl.int_range(pl.len()).over("user", "timestamp")
    m = pl.len().over("user", "timestamp")
    return (pl.col("timestamp").cast(pl.Float64) + k / m).alias("timestamp")


def _write_recbole(
    tmp: Path, stem: str, inter: pl.DataFrame, items: pl.DataFrame, social: pl.DataFrame, codes: pl.DataFrame | None,
    kg: pl.DataFrame,
) -> None:  # fmt: skip
    for frame, col, what in ((inter, "user", "user"), (items, "raw_id", "item"), (kg, "relation", "kg relation"),
                             (kg, "entity", "kg entity")):  # fmt: skip
        _check_tokens(frame, col, what, "RecBole", r"[\t\r\n]")
    table = inter.with_columns(_inter_timestamps(inter))
    lines = table.select(
        pl.concat_str([pl.col("user"), pl.col("item"), pl.col("timestamp").cast(pl.String)], separator="\t")
    )
    _write_lines(tmp / f"{stem}.inter", "user_id:token\titem_id:token\ttimestamp:float", lines.to_series())
    fields = [pl.col("raw_id"), _one_line(pl.col("text")).fill_null("")]
    head = "item_id:token\ttext:token_seq"
    if codes is not None:
        items = items.join(codes, on="raw_id", how="left", maintain_order="left")
        fields.append(pl.col("code").list.eval(pl.element().cast(pl.String)).list.join(" ").fill_null(""))
        head += "\titem_code:token_seq"
    _write_lines(tmp / f"{stem}.item", head, items.select(pl.concat_str(fields, separator="\t")).to_series())
    if social.height:
        rows = social.select(pl.concat_str(["user", "friend"], separator="\t")).to_series()
        _write_lines(tmp / f"{stem}.net", "user_id:token\tfriend_id:token", rows)
    if kg.height:
        rows = kg.select(pl.concat_str(["item", "relation", "entity"], separator="\t")).to_series()
        _write_lines(tmp / f"{stem}.kg", "head_id:token\trelation_id:token\ttail_id:token", rows)
        link = kg.select("item").unique(maintain_order=True)
        rows = link.select(pl.concat_str(["item", "item"], separator="\t")).to_series()
        _write_lines(tmp / f"{stem}.link", "item_id:token\tentity_id:token", rows)


def _write_sequences(
    tmp: Path, inter: pl.DataFrame, items: pl.DataFrame, social: pl.DataFrame, codes: pl.DataFrame | None,
    kg: pl.DataFrame,
) -> None:  # fmt: skip
    for frame, col, what in ((inter, "user", "user"), (items, "raw_id", "item")):
        _check_tokens(frame, col, what, "user_sequence.txt", r"\s")
    seqs = inter.group_by("user", maintain_order=True).agg(pl.col("item"))
    _write_lines(
        tmp / "user_sequence.txt",
        None,
        seqs.select(pl.concat_str([pl.col("user"), pl.col("item").list.join(" ")], separator=" ")).to_series(),
    )
    text = items.select(
        pl.concat_str([pl.col("raw_id"), _one_line(pl.col("text")).fill_null("")], separator="\t").str.strip_chars_end()
    )
    _write_lines(tmp / "item_plain_text.txt", None, text.to_series())
    if social.height:
        friends = social.group_by("user", maintain_order=True).agg(pl.col("friend"))
        _write_lines(
            tmp / "friend_sequence.txt",
            None,
            friends.select(pl.concat_str([pl.col("user"), pl.col("friend").list.join(" ")], separator=" ")).to_series(),
        )
    if kg.height:
        for col, what in (("relation", "kg relation"), ("entity", "kg entity")):
            _check_tokens(kg, col, what, "item_kg.txt", r"[\t\r\n]")
        rows = kg.select(pl.concat_str(["item", "relation", "entity"], separator="\t")).to_series()
        _write_lines(tmp / "item_kg.txt", None, rows)
    if codes is not None:
        _write_lines(
            tmp / "item_codes.txt",
            None,
            codes.select(
                pl.concat_str(
                    [pl.col("raw_id"), pl.col("code").list.eval(pl.element().cast(pl.String)).list.join(" ")],
                    separator=" ",
                )
            ).to_series(),
        )


def _write_lines(path: Path, header: str | None, rows: pl.Series) -> None:
    body = "\n".join(rows.to_list())
    atomic_write_text(path, (f"{header}\n" if header else "") + body + ("\n" if len(rows) else ""))


def run(
    *,
    dataset: str,
    data_dir: Path,
    format: str,
    out: Path,
    ids: str | None = None,
    recs: str | None = None,
    split: str = "test",
    force: bool = False,
) -> Manifest:
    """Export processed dataset `dataset` to folder `out` in `format` (see the module docstring)."""
    watch = Stopwatch()
    if format not in FORMATS:
        raise GdrError(f"unknown export format {format!r}", fix=f"use one of: {', '.join(FORMATS)}")
    if recs is not None and format != "parquet":
        raise GdrError("--recs is exported as a plain table", fix="use --format parquet with --recs")
    paths = DataPaths(Path(data_dir), dataset)
    out = Path(out).expanduser()
    _check_out(out, force, paths)
    processed = open_processed(paths)
    users, items = processed.table("users"), processed.table("items")
    inputs = {"processed": processed.ref}
    interactions = processed.table("interactions")
    inter = interactions.select(
        _raw(interactions, "user", users).alias("user"),
        _raw(interactions, "item", items).alias("item"),
        pl.col("timestamp"),
    )
    social_ids = processed.table("social")
    social = social_ids.select(
        _raw(social_ids, "user", users).alias("user"), _raw(social_ids, "friend", users).alias("friend")
    )
    edges = edge_order(social_ids) if format == "recbole" else social_ids
    edges = edges.select(_raw(edges, "user", users).alias("user"), _raw(edges, "friend", users).alias("friend"))
    raw_items = items.select("raw_id", "text")
    kg_ids = processed.table("kg") if (processed.folder / "kg.parquet").exists() else pl.DataFrame(schema=KG_SCHEMA)
    kg = kg_ids.select(_raw(kg_ids, "item", items).alias("item"), "relation", "entity")
    codes = None
    if ids is not None:
        codes, view, ref = _codes(paths, ids, processed)
        inputs.update(ref)
        if view != "item" and format != "parquet":
            raise GdrError(f"ID set {ids!r} codes users (--view social)", fix="export user codes with --format parquet")
    plain_recs = None
    if recs is not None:
        plain_recs, ref = _recs(paths, recs, split, processed)
        inputs.update(ref)

    with staged_dir(out) as tmp:
        if format == "recbole":
            _write_recbole(tmp, out.name, inter, raw_items, edges, codes, kg)
        elif format == "sequences":
            _write_sequences(tmp, inter, raw_items, social, codes, kg)
        else:
            write_parquet(tmp / "interactions.parquet", inter)
            write_parquet(tmp / "items.parquet", raw_items)
            for name, key in (("splits", "item"), ("social_splits", "friend")):
                table = processed.table(name)
                ref_ids = items if key == "item" else users
                write_parquet(
                    tmp / f"{name}.parquet",
                    table.select(
                        _raw(table, "user", users).alias("user"),
                        _raw(table, "train", ref_ids).alias("train"),
                        _raw(table, "valid", ref_ids).alias("valid"),
                        _raw(table, "test", ref_ids).alias("test"),
                    ),
                )
            write_parquet(tmp / "social.parquet", social)
            write_parquet(tmp / "kg.parquet", kg)
            if codes is not None:
                write_parquet(tmp / "codes.parquet", codes)
            if plain_recs is not None:
                write_parquet(tmp / "recs.parquet", plain_recs)
        stats = {
            "format": format,
            "users": users.height,
            "items": items.height,
            "interactions": inter.height,
            "social_edges": social.height // 2,
            "kg_edges": kg.height,
            "ids": ids,
            "recs": recs,
            "split": split if recs else None,
        }
        manifest = Manifest(
            stage="export",
            dataset=dataset,
            name=out.name,
            command=command_line(),
            config={"format": format, "ids": ids, "recs": recs, "split": split},
            inputs=inputs,
            stats=stats,
            wall_time_s=watch.seconds(),
        )
        write_manifest(tmp, manifest)
    console.print(
        f"exported {dataset} as {format} -> {out}: {users.height:,} users, {items.height:,} items, "
        f"{inter.height:,} interactions{', recs of ' + recs if recs else ''} in {watch.seconds():.1f} s"
    )
    return manifest
