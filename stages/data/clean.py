"""Raw bundle -> clean interactions with compact ids: dedupe, iterative k-core, id compaction, sort.

Choices (the config field descriptions, i.e. `gdr preprocess --help`, say the same):
- Exact duplicates, i.e. rows with the same (user, item, timestamp), are dropped keeping the first
  in input order: they are logging artefacts (e.g. several tags on one artist at once), not repeat
  consumption. The same item at different times stays (repeat consumption is signal). Counts
  (for the k-core) are taken after this drop.
- k-core counts interactions (rows), not distinct items, and repeats until no user or item is
  below its threshold. Users need at least 3 (leave-one-out needs a train, valid and test item),
  so a user threshold below 3 acts as 3; 0 or 1 for items turns the item filter off.
- Compact ids 0..n-1 follow the raw ids' order: numeric order when every raw id is an integer,
  else string order. They depend only on the kept rows, never on file order.
- Rows are sorted by user, then timestamp, ties kept in input order.

Speed: strings are hashed once (64-bit) while the file is scanned; everything after works on
integer codes with numpy (no string hash tables, no Python loops over rows). The k-core of the
raw rows is taken first, so the duplicate check and the collision check (a second, independent
hash of each surviving id) only see the survivors; a collision falls back to exact string codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from gdr_cli.console import console
from gdr_cli.errors import GdrError
from stages.data.bundle import RawBundle

SEED_A, SEED_B = 0x5EED, 0xB0B


@dataclass
class Clean:
    """Cleaned data: interactions user/item/timestamp (int32/int32/int64, sorted), users and items tables."""

    interactions: pl.DataFrame
    users: pl.DataFrame  # user:int32, raw_id:str
    items: pl.DataFrame  # item:int32, raw_id:str
    raw_rows: int
    duplicates: int  # exact duplicates dropped among the rows that pass the k-core of the raw rows


def collect(bundle: RawBundle) -> pl.DataFrame:
    """Materialise the bundle's rows (+ 64-bit hashes of user and item); bad input -> `GdrError`."""
    lf = bundle.interactions.with_columns(
        pl.col("user").hash(SEED_A).alias("uh"), pl.col("item").hash(SEED_A).alias("ih")
    )
    try:
        df = lf.collect(engine="streaming")
    except pl.exceptions.PolarsError as exc:
        if bundle.diagnose is not None:
            bundle.diagnose()
        first = str(exc).strip().splitlines()[0]
        raise GdrError(f"cannot read interactions: {first}", where=bundle.origin,
                       fix="check the file format against the source's description in `gdr preprocess --help`") from None
    bad = df.select(pl.any_horizontal(pl.col("user", "item", "timestamp").is_null()).arg_true().first()).item()
    if bad is not None:
        if bundle.diagnose is not None:
            bundle.diagnose()
        raise GdrError(f"missing user, item or timestamp in row {bad + 1}", where=bundle.origin,
                       fix="every row needs a user, an item and an integer timestamp")
    return df


def frequent(hashes: pl.Series, k: int) -> pl.Series:
    """Mask of rows whose hash occurs at least `k` times: one k-core round before any coding.  # [N] bool

    A hash collision only adds counts, so the rows kept are a superset of the exact round's.
    """
    s = np.sort(hashes.to_numpy())
    new = np.empty(s.size, dtype=bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    counts = np.diff(starts, append=s.size)
    return hashes.is_in(pl.Series(s[starts[counts >= k]]).implode())


def codes(hashes: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of 64-bit hashes by one sort -> (codes [N] int64, one row holding each code [K] uint32)."""
    perm = hashes.arg_sort().to_numpy()  # [N] uint32
    s = hashes.to_numpy()[perm]
    new = np.empty(s.size, dtype=bool)
    new[:1] = True
    np.not_equal(s[1:], s[:-1], out=new[1:])
    out = np.empty(s.size, dtype=np.int64)
    out[perm] = np.cumsum(new) - 1
    return out, perm[new]


def exact_codes(raw: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Dense codes of strings without hashing (slow path after a hash collision)."""
    code = raw.rank("dense").cast(pl.Int64).to_numpy() - 1
    rep = np.empty(int(code.max()) + 1 if code.size else 0, dtype=np.int64)
    rep[code] = np.arange(code.size)
    return code, rep


def collides(raw: pl.Series, code: np.ndarray, rep: np.ndarray, rows: np.ndarray) -> bool:
    """True when two different raw ids among `rows` share a code (checked with an independent hash).

    Checking the rows that pass the k-core of the hashed codes is enough: a merged pair either
    is not there (then neither id alone would pass) or shows up in these rows.
    """
    check = raw.gather(rows).hash(SEED_B).to_numpy()
    return not np.array_equal(check, raw.gather(rep[code[rows]]).hash(SEED_B).to_numpy())


def first_distinct(u: np.ndarray, i: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Mask of rows that are the first of their exact (user, item, timestamp) triple.  # [N] bool"""
    frame = pl.DataFrame({"u": u, "i": i, "t": ts})
    key = frame.select(pl.struct("u", "i", "t").hash(SEED_A)).to_series()
    perm = key.arg_sort().to_numpy().astype(np.int64)
    k = key.to_numpy()[perm]
    dup = np.zeros(k.size, dtype=bool)
    np.equal(k[1:], k[:-1], out=dup[1:])
    keep = np.ones(k.size, dtype=bool)
    if not dup.any():
        return keep
    run = np.cumsum(~dup) - 1
    first = np.minimum.reduceat(perm, np.flatnonzero(~dup))[run]  # earliest row of each equal-key run
    later = perm != first
    a, b = perm[later], first[later]
    if (u[a] == u[b]).all() and (i[a] == i[b]).all() and (ts[a] == ts[b]).all():
        keep[a] = False
        return keep
    return frame.select(pl.struct("u", "i", "t").is_first_distinct()).to_series().to_numpy()


def k_core(u: np.ndarray, i: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Indices of the rows that survive the iterative k-core (codes u [N], i [N]).  # [M] int64

    Counts are kept up to date by subtracting the rows each round drops, so later rounds cost
    a pass over the surviving rows and a small bincount, not a full recount.
    """
    rows, cu, ci = np.arange(u.size), u, i
    nu, ni = (int(u.max()) + 1, int(i.max()) + 1) if u.size else (0, 0)
    count_u = np.bincount(cu, minlength=nu)
    count_i = np.bincount(ci, minlength=ni) if min_item > 1 else None
    while rows.size:
        keep = count_u[cu] >= min_user
        if count_i is not None:
            keep &= count_i[ci] >= min_item
        if keep.all():
            break
        drop = ~keep
        count_u -= np.bincount(cu[drop], minlength=nu)
        if count_i is not None:
            count_i -= np.bincount(ci[drop], minlength=ni)
        rows, cu, ci = rows[keep], cu[keep], ci[keep]
    return rows


def _ranks(raw: pl.Series) -> np.ndarray:
    """Position of each raw id in sorted order (numeric when all are integers).  # [K] int64"""
    as_int = raw.str.strip_chars().cast(pl.Int64, strict=False)
    key = as_int if as_int.null_count() == 0 else raw
    order = key.arg_sort().to_numpy().astype(np.int64)
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank


def _compact(code: np.ndarray, rep: np.ndarray, raw: pl.Series, name: str) -> tuple[np.ndarray, pl.DataFrame]:
    """Kept codes -> ids 0..n-1 in raw-id order -> (new ids per row, table name/raw_id)."""
    kept = np.flatnonzero(np.bincount(code, minlength=rep.size))  # codes in use, ascending
    raw_ids = raw.gather(rep[kept])
    rank = _ranks(raw_ids)
    lookup = np.full(rep.size, -1, dtype=np.int64)
    lookup[kept] = rank
    table = pl.DataFrame({name: np.arange(kept.size, dtype=np.int32), "raw_id": raw_ids.gather(np.argsort(rank))})
    return lookup[code].astype(np.int32), table


def _empty_core(bundle: RawBundle, k_user: int, min_item: int, raw_rows: int) -> None:
    raise GdrError(
        f"no interactions left after the k-core (users >= {k_user}, items >= {min_item}) of {raw_rows:,} rows",
        where=bundle.origin,
        fix="lower the thresholds, e.g. --min-user 3 --min-item 1" if k_user > 3 or min_item > 1
        else "no user has 3 interactions, which leave-one-out needs; use a larger dataset",
    )


def clean(bundle: RawBundle, *, min_user: int, min_item: int, dedupe: bool = True) -> Clean:
    """Dedupe, k-core, compact ids and sort the bundle's interactions (see module docstring)."""
    df = collect(bundle)
    raw_rows = df.height
    if raw_rows == 0:
        raise GdrError("the input has no interactions", where=bundle.origin, fix="check that the file has data rows")
    k_user = max(min_user, 3)
    mask = frequent(df["uh"], k_user)
    if min_item > 1:
        mask &= frequent(df["ih"], min_item)
    df = df.filter(mask)  # rows that cannot be in any core go before the (sort-based) coding
    if df.height == 0:
        _empty_core(bundle, k_user, min_item, raw_rows)
    u, urep = codes(df["uh"])
    i, irep = codes(df["ih"])
    ts = df["timestamp"].to_numpy()
    # The k-core of the raw rows contains the k-core of the deduplicated rows (duplicates only add
    # counts, and copies of one row share user and item), so dedupe only the survivors, then re-core.
    kept = k_core(u, i, k_user, min_item)
    if collides(df["user"], u, urep, kept):
        console.print("hash collision among user ids; coding them exactly (slower)")
        u, urep = exact_codes(df["user"])
        kept = k_core(u, i, k_user, min_item)
    if collides(df["item"], i, irep, kept):
        console.print("hash collision among item ids; coding them exactly (slower)")
        i, irep = exact_codes(df["item"])
        kept = k_core(u, i, k_user, min_item)
    duplicates = 0
    if dedupe and kept.size:
        distinct = kept[first_distinct(u[kept], i[kept], ts[kept])]
        duplicates = kept.size - distinct.size
        kept = distinct[k_core(u[distinct], i[distinct], k_user, min_item)] if duplicates else distinct
    if kept.size == 0:
        _empty_core(bundle, k_user, min_item, raw_rows)
    user, users = _compact(u[kept], urep, df["user"], "user")
    item, items = _compact(i[kept], irep, df["item"], "item")
    inter = pl.DataFrame({"user": user, "item": item, "timestamp": ts[kept], "order": df["order"].to_numpy()[kept]})
    inter = inter.sort(["user", "timestamp", "order"]).drop("order")
    return Clean(interactions=inter, users=users, items=items, raw_rows=raw_rows, duplicates=duplicates)
