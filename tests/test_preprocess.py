"""`gdr preprocess`: cleaning and splitting by hand, every source on its true raw format, real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gdr_cli.app import main
from stages.config.preprocess import PreprocessConfig, SyntheticConfig
from stages.data.bundle import frame_bundle
from stages.data.clean import clean, first_distinct, k_core
from stages.data.split import leave_one_out, social_graph, social_leave_one_out
from stages.data.synthetic import generate
from stages.preprocess import run

FIX = Path(__file__).parent / "fixtures" / "preprocess"


def fixture_path(path: str, tmp: Path) -> Path:
    """A fixture input. The hand-made Last.fm files are stored as `*.dat.txt` (so they are never
    mistaken for the shared dataset's files) and get their real names in a copy under `tmp`."""
    if path != "lastfm":
        return FIX / path
    out = tmp / "lastfm-raw"
    out.mkdir(exist_ok=True)
    for f in (FIX / "lastfm").glob("*.dat.txt"):
        shutil.copy(f, out / f.name.removesuffix(".txt"))
    return out


TABLES = ("interactions", "items", "users", "splits", "social", "social_splits", "kg")
SCHEMAS = {
    "interactions": {"user": pl.Int32, "item": pl.Int32, "timestamp": pl.Int64},
    "items": {"item": pl.Int32, "raw_id": pl.String, "text": pl.String},
    "users": {"user": pl.Int32, "raw_id": pl.String},
    "splits": {"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    "social": {"user": pl.Int32, "friend": pl.Int32},
    "social_splits": {"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    "kg": {"item": pl.Int32, "relation": pl.String, "entity": pl.String},
}
LOOSE = PreprocessConfig(min_user_interactions=0, min_item_interactions=0)
TINY = PreprocessConfig(synthetic=SyntheticConfig(users=300, items=120, mean_len=12))


def load(root: Path, dataset: str) -> dict[str, pl.DataFrame]:
    folder = root / dataset / "processed"
    return {t: pl.read_parquet(folder / f"{t}.parquet") for t in TABLES}


def check_invariants(tables: dict[str, pl.DataFrame]) -> None:
    """Schemas exact; ids compact; sorted; splits = each user's time-ordered sequence; social symmetric."""
    for name, schema in SCHEMAS.items():
        assert dict(tables[name].schema) == schema, name
    inter, users, items = tables["interactions"], tables["users"], tables["items"]
    assert users["user"].to_list() == list(range(users.height))
    assert items["item"].to_list() == list(range(items.height))
    assert inter.equals(inter.sort(["user", "timestamp"], maintain_order=True))
    seqs = inter.group_by("user", maintain_order=True).agg("item")
    joined = seqs.join(tables["splits"], on="user")
    assert joined.height == users.height == tables["splits"].height
    for row in joined.iter_rows(named=True):
        assert row["train"] + [row["valid"], row["test"]] == row["item"]
    social = tables["social"]
    assert social.filter(pl.col("user") == pl.col("friend")).height == 0
    assert social.sort("user", "friend").equals(
        social.select(pl.col("friend").alias("user"), pl.col("user").alias("friend")).sort("user", "friend")
    )
    assert not social.is_duplicated().any()


# --- steps by hand ---------------------------------------------------------------------------


def test_first_distinct_drops_exact_duplicates_only():
    u = np.array([0, 0, 0, 1, 0])
    i = np.array([5, 5, 5, 5, 6])
    t = np.array([9, 9, 10, 9, 9])
    assert first_distinct(u, i, t).tolist() == [True, False, True, True, True]


def test_k_core_iterates_until_stable():
    # item 9 has 2 rows; dropping it leaves user 1 with 2 < 3 rows, which then drops item 7 below 3
    u = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    i = np.array([7, 8, 9, 7, 8, 9, 7, 8, 6, 8, 6, 6])
    kept = k_core(u, i, 3, 3)
    assert sorted(set(u[kept].tolist())) == []  # the whole toy graph unravels
    kept = k_core(u, i, 3, 2)
    assert kept.tolist() == list(range(12))
    kept = k_core(u, i, 3, 1)
    assert kept.size == 12


def test_clean_compacts_numeric_ids_and_keeps_tie_order():
    frame = pl.DataFrame(
        {
            "user": ["10", "9", "10", "9", "10", "9"],
            "item": ["b", "a", "a", "b", "c", "c"],
            "timestamp": [5, 1, 5, 2, 6, 3],
        }
    )
    cl = clean(frame_bundle(frame, items=None, social=None, origin="t"), min_user=0, min_item=0)
    assert cl.users["raw_id"].to_list() == ["9", "10"]  # numeric order, not string order
    assert cl.items["raw_id"].to_list() == ["a", "b", "c"]
    # user "10" (id 1): b and a tie at t=5 -> input order b, a
    assert cl.interactions.filter(pl.col("user") == 1)["item"].to_list() == [1, 0, 2]


def test_social_split_removes_held_out_edges_from_both_ends():
    # friend lists in input order; 0: 1 2 3 4 | 1: 0 2 3 | 2: 0 1 3 | 3: 0 1 2 | 4: 0 1 2 3
    pairs = {0: [1, 2, 3, 4], 1: [0, 2, 3], 2: [0, 1, 3], 3: [0, 1, 2], 4: [0, 1, 2, 3]}
    seq = pl.DataFrame(
        [(u, f) for u, fs in pairs.items() for f in fs], schema={"user": pl.Int32, "friend": pl.Int32}, orient="row"
    )
    out = social_leave_one_out(seq)
    # held out (valid, test): 0:(3,4) 1:(2,3) 2:(1,3) 3:(1,2) 4:(2,3); each also leaves the friend's list
    assert out.to_dicts() == [
        {"user": 0, "train": [1, 2], "valid": 3, "test": 4},
        {"user": 1, "train": [0], "valid": 2, "test": 3},
        {"user": 2, "train": [0], "valid": 1, "test": 3},
        # 3's list [0] loses 0 (0's valid friend is 3): nothing left, 3 is dropped
        {"user": 4, "train": [1], "valid": 2, "test": 3},  # 0 left: 4 is 0's test friend
    ]
    held = {(r["user"], f) for r in out.to_dicts() for f in (r["valid"], r["test"])}
    train = {(r["user"], f) for r in out.to_dicts() for f in r["train"]}
    assert not {(f, u) for u, f in held} & train  # no held-out friendship in any training list


def test_leave_one_out_by_hand():
    seq = pl.DataFrame({"user": [0, 0, 0, 0, 1, 1, 2, 2, 2], "item": [4, 3, 2, 1, 5, 6, 7, 8, 9]})
    out = leave_one_out(seq, "item")
    assert out.to_dicts() == [
        {"user": 0, "train": [4, 3], "valid": 2, "test": 1},
        {"user": 2, "train": [7], "valid": 8, "test": 9},
    ]


def test_social_graph_symmetric_dedup_no_self_loops_input_order():
    users = pl.DataFrame(
        {"user": [0, 1, 2, 3], "raw_id": ["a", "b", "c", "d"]}, schema={"user": pl.Int32, "raw_id": pl.String}
    )
    raw = pl.DataFrame({"user": ["a", "a", "b", "c", "a", "d", "x"], "friend": ["c", "b", "a", "c", "d", "a", "a"]})
    g = social_graph(raw, users)
    assert g.filter(pl.col("user") == 0)["friend"].to_list() == [2, 1, 3]  # input order, b-a merged with a-b
    assert g.height == 6  # a-c, a-b, a-d both ways; c-c and x-a dropped


# --- whole stage ---------------------------------------------------------------------------


def test_synthetic_end_to_end_deterministic(tmp_path):
    m1 = run(source="synthetic", data_dir=tmp_path / "a", config=TINY)
    m2 = run(source="synthetic", data_dir=tmp_path / "b", config=TINY)
    t1, t2 = load(tmp_path / "a", "synthetic"), load(tmp_path / "b", "synthetic")
    check_invariants(t1)
    for name in TABLES:
        assert t1[name].equals(t2[name]), name
    assert m1.stats == m2.stats and m1.stage == "preprocess" and m1.seed == 0
    for key in (
        "users",
        "items",
        "interactions",
        "density",
        "seq_len_p50",
        "seq_len_p90",
        "seq_len_p99",
        "seq_len_max",
        "social_edges",
        "social_users",
    ):
        assert key in m1.stats
    assert m1.stats["interactions"] == t1["interactions"].height and t1["social"].height > 0
    inter = t1["interactions"]
    assert inter.group_by("user").len()["len"].min() >= 5 and inter.group_by("item").len()["len"].min() >= 5
    other = run(source="synthetic", data_dir=tmp_path / "c", config=TINY.model_copy(update={"seed": 1}))
    assert other.stats != m1.stats
    on_disk = json.loads((tmp_path / "a" / "synthetic" / "processed" / "manifest.json").read_text())
    assert on_disk["config"]["synthetic"]["users"] == 300
    assert sorted(on_disk["outputs"]) == sorted(f"{t}.parquet" for t in TABLES)


def test_synthetic_has_sequential_and_social_structure():
    cfg = SyntheticConfig(users=400, items=200, clusters=8, mean_len=15)
    inter, items, social = generate(cfg, 3)
    assert items.height == 200 and items["text"].str.split(" ").list.len().min() == cfg.words

    def bigram_hit_rate(seq: pl.DataFrame) -> float:
        pairs = seq.with_columns(pl.col("item").shift(1).over("user").alias("prev")).drop_nulls("prev")
        best = (
            pairs.group_by("prev", "item")
            .len()
            .sort("len", "item", descending=[True, False])
            .group_by("prev", maintain_order=True)
            .first()
        )
        return pairs.join(best, on="prev", suffix="_best").select((pl.col("item") == pl.col("item_best")).mean()).item()

    shuffled = inter.with_columns(pl.col("item").shuffle(seed=0).over("user"))
    assert bigram_hit_rate(inter) > 1.3 * bigram_hit_rate(shuffled)
    # friends share more items than random pairs
    sets = inter.group_by("user").agg(pl.col("item").unique())

    def overlap(pairs: pl.DataFrame) -> float:
        j = pairs.join(sets, on="user").join(sets.rename({"user": "friend", "item": "fitem"}), on="friend")
        return j.select(pl.col("item").list.set_intersection("fitem").list.len().mean()).item()

    rng = np.random.default_rng(0)
    users = inter["user"].unique().to_numpy()
    randoms = pl.DataFrame({"user": rng.choice(users, social.height), "friend": rng.choice(users, social.height)})
    assert overlap(social) > 1.5 * overlap(randoms)


@pytest.mark.parametrize(
    ("source", "path", "opts"),
    [
        ("movielens-100k", "ml-100k", {}),
        ("movielens-1m", "ml-1m", {}),
        ("amazon-books", "ratings_Books.csv", {}),
        ("amazon-2014", "amazon-2014", {"category": "Beauty"}),
        ("lastfm-2k", "lastfm", {}),
        ("recbole", "recbole/tiny.inter", {}),
        ("interactions", "interactions.csv", {"user_col": "uid", "item_col": "iid", "time_col": "ts"}),
    ],
)
def test_fixture_sources_same_result(tmp_path, source, path, opts):
    """The same event log in each raw format gives the same splits (user 5 has 1 event, one exact duplicate)."""
    cfg = LOOSE.model_copy(update=opts)
    m = run(source=source, data_dir=tmp_path, config=cfg, input=fixture_path(path, tmp_path), name="t")
    tables = load(tmp_path, "t")
    check_invariants(tables)
    assert m.stats["users"] == 4 and m.stats["items"] == 5 and m.stats["duplicates_dropped"] == 1
    splits = tables["splits"].to_dicts()
    assert splits[3] == {"user": 3, "train": [3, 2], "valid": 1, "test": 0}  # tie at 310 kept in file order
    assert splits[2] == {"user": 2, "train": [2, 3, 0], "valid": 1, "test": 4}


def test_fixture_item_text_and_social(tmp_path):
    run(source="movielens-100k", data_dir=tmp_path, config=LOOSE, input=FIX / "ml-100k", name="ml")
    text = load(tmp_path, "ml")["items"]["text"].to_list()
    assert text[3] == "Café Society (1995), Animation, Children's, Comedy"  # latin-1 decoded, genres named
    run(
        source="amazon-2014",
        data_dir=tmp_path,
        config=LOOSE.model_copy(update={"category": "Beauty"}),
        input=FIX / "amazon-2014",
        name="az",
    )
    az = load(tmp_path, "az")["items"]["text"].to_list()
    assert az[0] == "Lipstick no. 10 | L'Oreal | Beauty, Makeup" and az[2] == 'Shampoo "Pro" | Beauty, Hair Care'
    run(source="lastfm-2k", data_dir=tmp_path, config=LOOSE, input=fixture_path("lastfm", tmp_path), name="fm")
    fm = load(tmp_path, "fm")
    assert fm["items"]["text"][0] == "Björk 10"
    assert fm["interactions"]["timestamp"][0] == 1238536800 + 100  # ms -> s
    # 1-2, 1-3, 1-4, 2-3, 3-4 (4-4 self loop and unknown 9 dropped)
    # user 2's only training friend is 0, whose valid friend is 2: that edge leaves 2's list, 2 is dropped
    assert fm["social"].height == 10 and fm["social_splits"]["user"].to_list() == [0]
    assert fm["social_splits"].row(0) == (0, [1], 2, 3)
    run(source="recbole", data_dir=tmp_path, config=LOOSE, input=FIX / "recbole", name="rb")
    rb = load(tmp_path, "rb")
    assert rb["items"]["text"][0] == "Toy Story (1995), 1995" and rb["social"].height == 8


def test_sequences_source(tmp_path):
    m = run(source="sequences", data_dir=tmp_path, config=LOOSE, input=FIX / "sequences", name="s")
    tables = load(tmp_path, "s")
    check_invariants(tables)
    assert m.stats["users"] == 4 and m.stats["duplicates_dropped"] == 0  # positions make repeats distinct
    assert tables["splits"].row(3) == (3, [3, 2, 2], 1, 0)
    assert tables["items"]["text"][4].startswith("Shanghai Triad")
    assert tables["social_splits"].row(0) == (0, [1], 2, 3)


def test_parquet_interactions_without_time(tmp_path):
    frame = pl.read_csv(FIX / "interactions.csv")
    frame.write_parquet(tmp_path / "log.parquet")
    cfg = LOOSE.model_copy(update={"user_col": "uid", "item_col": "iid", "time_col": None})
    m = run(source="interactions", data_dir=tmp_path, config=cfg, input=tmp_path / "log.parquet", name="p")
    assert m.stats["users"] == 4 and m.stats["duplicates_dropped"] == 0  # row order as time: no exact duplicates


def test_cli_runs_and_flags_reach_config(tmp_path, capsys):
    code = main(
        [
            "preprocess",
            "synthetic",
            "--data-dir",
            str(tmp_path),
            "--set",
            "synthetic.users=200",
            "--set",
            "synthetic.items=80",
            "--min-user",
            "6",
            "--seed",
            "4",
            "--name",
            "syn",
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "preprocessed synthetic" in err and "Traceback" not in err
    manifest = json.loads((tmp_path / "syn" / "processed" / "manifest.json").read_text())
    assert manifest["config"]["min_user_interactions"] == 6 and manifest["seed"] == 4
    assert manifest["config"]["synthetic"]["users"] == 200
    inter = pl.read_parquet(tmp_path / "syn" / "processed" / "interactions.parquet")
    assert inter.group_by("user").len()["len"].min() >= 6


# --- real data ---------------------------------------------------------------------------


def test_ml100k_recbole_atomic_5core(tmp_path, ml100k_dir):
    m = run(source="movielens-100k", data_dir=tmp_path, config=PreprocessConfig(), input=ml100k_dir)
    assert (m.stats["users"], m.stats["items"], m.stats["interactions"]) == (943, 1349, 99287)  # RecBole's 5-core
    tables = load(tmp_path, "movielens-100k")
    check_invariants(tables)
    assert tables["items"]["text"][0].startswith("Toy Story")


def test_lastfm_real(tmp_path, lastfm_dir):
    m = run(source="lastfm-2k", data_dir=tmp_path, config=PreprocessConfig(), input=lastfm_dir)
    tables = load(tmp_path, "lastfm-2k")
    check_invariants(tables)
    assert m.stats["users"] > 1000 and m.stats["social_edges"] > 1000 and m.stats["social_split_users"] > 500
    ts = tables["interactions"]["timestamp"]
    assert 1_104_537_600 < ts.median() < 1_304_208_000  # day/month/year -> unix seconds (2005..2011)
    assert (ts % 86_400 == 0).all()  # midnight UTC (a few real rows carry odd years; they are kept as given)
    assert tables["items"]["text"].null_count() < 0.01 * m.stats["items"]  # a few tagged artists lack a name row


def test_hash_collision_falls_back_to_exact_codes(monkeypatch):
    from stages.data import clean as cleaning

    frame = pl.DataFrame(
        {
            "user": ["a", "b", "a", "b", "a", "b"],
            "item": ["x", "y", "y", "x", "z", "z"],
            "timestamp": [1, 2, 3, 4, 5, 6],
        }
    )
    bundle = frame_bundle(frame, items=None, social=None, origin="t")
    good = clean(bundle, min_user=0, min_item=0)
    real = cleaning.codes
    monkeypatch.setattr(cleaning, "codes", lambda hashes: real(hashes * 0))  # every id collides
    merged = real(pl.Series([7, 7, 9], dtype=pl.UInt64))
    assert cleaning.collides(pl.Series(["a", "b", "c"]), *merged, np.arange(3))
    assert not cleaning.collides(pl.Series(["a", "a", "c"]), *merged, np.arange(3))
    again = clean(bundle, min_user=0, min_item=0)
    assert again.interactions.equals(good.interactions) and again.users.equals(good.users)
    assert again.items.equals(good.items)


def test_csv_without_time_column_uses_file_order(tmp_path):
    cfg = LOOSE.model_copy(update={"user_col": "uid", "item_col": "iid", "time_col": None})
    run(source="interactions", data_dir=tmp_path, config=cfg, input=FIX / "interactions.csv", name="c")
    inter = load(tmp_path, "c")["interactions"]
    assert inter.filter(pl.col("user") == 0)["timestamp"].to_list() == [0, 1, 2, 3]


def test_quoted_csv_with_extra_columns(tmp_path):
    rows = "".join(f'"u{u}","i{i}","{10 * u + i}","a, b"\n' for u in range(3) for i in range(4))
    (tmp_path / "log.csv").write_text('"user_id","item_id","timestamp","note"\n' + rows)
    m = run(source="interactions", data_dir=tmp_path, config=LOOSE, input=tmp_path / "log.csv", name="q")
    tables = load(tmp_path, "q")
    assert m.stats["users"] == 3 and tables["users"]["raw_id"].to_list() == ["u0", "u1", "u2"]
    assert tables["splits"].row(0) == (0, [0, 1], 2, 3)
