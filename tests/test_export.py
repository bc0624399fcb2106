"""`gdr export`: RecBole / IDGenRec-SASRec / Parquet folders whose `gdr preprocess` gives back the same splits."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from gdr_cli.app import main
from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.export import edge_order
from stages.export import run as export
from stages.preprocess import run as preprocess


def tables(root: Path, dataset: str) -> dict[str, pl.DataFrame]:
    folder = root / dataset / "processed"
    return {
        name: pl.read_parquet(folder / f"{name}.parquet")
        for name in ("users", "items", "splits", "social", "social_splits", "interactions", "kg")
    }


def raw_view(root: Path, dataset: str) -> dict[str, object]:
    """The processed dataset with every compact id replaced by its raw id (what a round trip must keep)."""
    t = tables(root, dataset)
    users = dict(zip(t["users"]["user"].to_list(), t["users"]["raw_id"].to_list(), strict=True))
    items = dict(zip(t["items"]["item"].to_list(), t["items"]["raw_id"].to_list(), strict=True))

    def split(name: str, ids: dict) -> dict:
        return {
            users[r["user"]]: ([ids[i] for i in r["train"]], ids[r["valid"]], ids[r["test"]])
            for r in t[name].iter_rows(named=True)
        }

    seqs: dict[str, list[str]] = {}
    for u, i in t["interactions"].select("user", "item").iter_rows():
        seqs.setdefault(users[u], []).append(items[i])
    return {
        "splits": split("splits", items),
        "sequences": seqs,
        "text": {items[i]: x for i, x in t["items"].select("item", "text").iter_rows()},
        "social": {(users[u], users[f]) for u, f in t["social"].iter_rows()},
        "social_splits": split("social_splits", users),
        "kg": {(items[i], r, e) for i, r, e in t["kg"].select("item", "relation", "entity").iter_rows()},
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    cfg = PreprocessConfig.model_validate({"synthetic": {"users": 150, "items": 80}})
    preprocess(source="synthetic", data_dir=root, config=cfg)
    return root


def reimport(fmt: str, out: Path, root: Path, name: str) -> None:
    if fmt == "recbole":
        preprocess(source="recbole", data_dir=root, config=PreprocessConfig(), input=out, name=name)
    elif fmt == "sequences":
        preprocess(source="sequences", data_dir=root, config=PreprocessConfig(), input=out, name=name)
    else:
        cfg = PreprocessConfig(user_col="user", item_col="item", time_col="timestamp")
        preprocess(source="interactions", data_dir=root, config=cfg, input=out / "interactions.parquet", name=name)
        # items and the friend graph travel as tables: check them directly
        exported = pl.read_parquet(out / "splits.parquet")
        assert exported.schema == {
            "user": pl.String,
            "train": pl.List(pl.String),
            "valid": pl.String,
            "test": pl.String,
        }


def check_round_trip(root: Path, dataset: str, fmt: str, tmp: Path) -> None:
    out = tmp / f"{dataset}-{fmt}"
    export(dataset=dataset, data_dir=root, format=fmt, out=out)
    reimport(fmt, out, root, f"{dataset}-{fmt}-back")
    before, after = raw_view(root, dataset), raw_view(root, f"{dataset}-{fmt}-back")
    assert after["splits"] == before["splits"]
    assert after["sequences"] == before["sequences"]
    assert before["kg"], "the dataset has a knowledge graph to carry"
    if fmt != "parquet":
        assert after["kg"] == before["kg"]  # the .kg/.link (recbole) or item_kg.txt (sequences) edges read back
        norm = {k: " ".join(v.split()) or None if v else None for k, v in before["text"].items()}
        assert after["text"] == norm
        assert after["social"] == before["social"]
        if fmt == "recbole":  # .net edges are ordered so that each user's friend order comes back
            assert after["social_splits"] == before["social_splits"]
    else:
        back = pl.read_parquet(out / "splits.parquet")
        assert {r["user"]: (r["train"], r["valid"], r["test"]) for r in back.iter_rows(named=True)} == before["splits"]
        items = pl.read_parquet(out / "items.parquet")
        assert dict(items.iter_rows()) == before["text"]
        assert set(pl.read_parquet(out / "social.parquet").iter_rows()) == before["social"]
        kg = pl.read_parquet(out / "kg.parquet")
        assert kg.schema == {"item": pl.String, "relation": pl.String, "entity": pl.String}
        assert set(kg.iter_rows()) == before["kg"] and kg.height == len(before["kg"])


@pytest.mark.parametrize("fmt", ["recbole", "sequences", "parquet"])
def test_round_trip_reproduces_the_splits_synthetic(synthetic: Path, tmp_path: Path, fmt: str) -> None:
    check_round_trip(synthetic, "synthetic", fmt, tmp_path)


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory, ml100k_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("ml")
    preprocess(source="recbole", data_dir=root, config=PreprocessConfig(), input=ml100k_dir, name="ml")
    return root


@pytest.mark.parametrize("fmt", ["recbole", "sequences", "parquet"])
def test_round_trip_reproduces_the_splits_ml100k(ml100k: Path, tmp_path: Path, fmt: str) -> None:
    check_round_trip(ml100k, "ml", fmt, tmp_path)


def test_recbole_ties_are_broken_in_split_order(tmp_path: Path) -> None:
    """Equal timestamps: RecBole sorts by time, so ties get increasing fractions in the split's order."""
    path = tmp_path / "t.inter"
    path.write_text(
        "user_id:token\titem_id:token\ttimestamp:float\n"
        + "".join(f"u\t{i}\t7\n" for i in "cab")
        + "v\ta\t1\nv\tb\t2\nv\tc\t3\n"
    )
    preprocess(
        source="recbole",
        data_dir=tmp_path,
        config=PreprocessConfig(min_user_interactions=0, min_item_interactions=0),
        input=path,
        name="t",
    )
    out = tmp_path / "out"
    export(dataset="t", data_dir=tmp_path, format="recbole", out=out)
    rows = [line.split("\t") for line in (out / "out.inter").read_text().splitlines()[1:]]
    assert rows == [
        ["u", "c", "7.0"],
        ["u", "a", "7.333333333333333"],
        ["u", "b", "7.666666666666667"],
        ["v", "a", "1.0"],
        ["v", "b", "2.0"],
        ["v", "c", "3.0"],
    ]


def test_edge_order_gives_every_user_their_friend_order() -> None:
    # from input edges 1-2, 0-3, 0-1, 0-2; written as is (by user), user 1 would come back as [0, 2]
    social = pl.DataFrame(
        {"user": [0, 0, 0, 1, 1, 2, 2, 3], "friend": [3, 1, 2, 2, 0, 1, 0, 0]},
        schema={"user": pl.Int32, "friend": pl.Int32},
    )
    rows = edge_order(social)
    assert rows.height == 8
    first: dict[frozenset, int] = {}
    for pos, (u, f) in enumerate(rows.iter_rows()):
        first.setdefault(frozenset((u, f)), pos)
    got = {
        u: sorted((f for v, f in social.iter_rows() if v == u), key=lambda f: first[frozenset((u, f))])
        for u in range(4)
    }
    assert got == {0: [3, 1, 2], 1: [2, 0], 2: [1, 0], 3: [0]}


def cli_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_foreign_folder_is_refused_unless_force(synthetic: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    argv = ["export", "synthetic", "--format", "sequences", "--out", str(out), "--data-dir", str(synthetic)]
    line = cli_error(capsys, argv)
    assert "non-empty folder that gdr export did not write" in line and "--force" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # untouched
    assert main([*argv, "--force"]) == 0
    assert "notes.txt" not in {p.name for p in out.iterdir()}
    assert main([*argv[:3], "recbole", *argv[4:]]) == 0  # an earlier export is replaced without --force
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "mine.inter",
        "mine.item",
        "mine.kg",
        "mine.link",
        "mine.net",
    ]
    assert not list(tmp_path.glob(".mine.*"))  # no staging leftovers


def test_bad_options_are_one_line(synthetic: Path, tmp_path: Path, capsys) -> None:
    base = ["--out", str(tmp_path / "o"), "--data-dir", str(synthetic)]
    assert "unknown export format 'csv'" in cli_error(capsys, ["export", "synthetic", "--format", "csv", *base])
    assert "--format parquet" in cli_error(
        capsys, ["export", "synthetic", "--format", "recbole", "--recs", "pop", *base]
    )
    assert "not found" in cli_error(capsys, ["export", "nothing", "--format", "parquet", *base])
    assert "gdr build-ids" in cli_error(capsys, ["export", "synthetic", "--format", "parquet", "--ids", "none", *base])
    assert "gdr sample" in cli_error(capsys, ["export", "synthetic", "--format", "parquet", "--recs", "none", *base])
    assert not (tmp_path / "o").exists()
    for out in (synthetic, synthetic.parent, synthetic / "synthetic" / "processed"):  # never, not even with --force
        line = cli_error(
            capsys, ["export", "synthetic", "--format", "parquet", "--out", str(out), "--force", *base[2:]]
        )
        assert "would replace the data root" in line
    assert (synthetic / "synthetic" / "processed" / "manifest.json").is_file()


def test_ids_and_recommendations_as_plain_tables(synthetic: Path, tmp_path: Path) -> None:
    root = ["--data-dir", str(synthetic)]
    assert main(["build-ids", "synthetic", "--method", "random", "--ids", "rnd", *root]) == 0
    assert main(["train-rec", "synthetic", "--model", "pop", "--run", "pop", *root]) == 0
    assert main(["sample", "synthetic", "--run", "pop", "--split", "test", *root]) == 0
    out = tmp_path / "pq"
    assert (
        main(["export", "synthetic", "--format", "parquet", "--out", str(out), "--ids", "rnd", "--recs", "pop", *root])
        == 0
    )
    t = tables(synthetic, "synthetic")
    users = dict(t["users"].iter_rows())
    items = dict(t["items"].select("item", "raw_id").iter_rows())
    recs = pl.read_parquet(synthetic / "synthetic" / "recs" / "pop" / "test" / "recs.parquet")
    plain = pl.read_parquet(out / "recs.parquet")
    assert plain.columns == ["user", "rank", "item", "score"]
    assert plain.rows() == [
        (users[u], r, items.get(i), s) for u, r, i, s in recs.select("user", "rank", "item", "score").rows()
    ]
    codes = pl.read_parquet(synthetic / "synthetic" / "ids" / "rnd" / "codes.parquet")
    exported = dict(pl.read_parquet(out / "codes.parquet").iter_rows())
    assert exported == {items[i]: c for i, c in codes.iter_rows()}
    # RecBole: the codes ride along in .item and stay out of the item text on the way back
    rb = tmp_path / "rb"
    assert main(["export", "synthetic", "--format", "recbole", "--out", str(rb), "--ids", "rnd", *root]) == 0
    head, first = (rb / "rb.item").read_text().splitlines()[:2]
    assert head == "item_id:token\ttext:token_seq\titem_code:token_seq"
    raw = first.split("\t")[0]
    assert first.split("\t")[2] == " ".join(map(str, exported[raw]))
    preprocess(source="recbole", data_dir=synthetic, config=PreprocessConfig(), input=rb, name="rb-back")
    assert raw_view(synthetic, "rb-back")["text"] == raw_view(synthetic, "synthetic")["text"]
    # processed data rebuilt since: the codes and recommendations are stale, and the export says so
    preprocess(
        source="synthetic",
        data_dir=synthetic,
        config=PreprocessConfig.model_validate({"synthetic": {"users": 150, "items": 80}, "seed": 5}),
    )
    with pytest.raises(GdrError, match="ID set 'rnd' is stale"):
        export(dataset="synthetic", data_dir=synthetic, format="parquet", out=tmp_path / "stale", ids="rnd")
    with pytest.raises(GdrError, match="recommendations of run 'pop' is stale"):
        export(dataset="synthetic", data_dir=synthetic, format="parquet", out=tmp_path / "stale", recs="pop")


def test_round_trip_keeps_the_lastfm_friend_order(lastfm_dir: Path, tmp_path: Path) -> None:
    preprocess(source="lastfm-2k", data_dir=tmp_path, config=PreprocessConfig(), input=lastfm_dir, name="fm")
    check_round_trip(tmp_path, "fm", "recbole", tmp_path)


def test_ids_with_spaces_cannot_go_to_text_formats(tmp_path: Path, capsys) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text(
        "user_id,item_id,timestamp\n"
        + "".join(f"{u},{i},{t}\n" for u in ("ann lee", "bo") for t, i in enumerate("xyz"))
    )
    cfg = PreprocessConfig(min_user_interactions=0, min_item_interactions=0)
    preprocess(source="interactions", data_dir=tmp_path, config=cfg, input=csv, name="log")
    base = ["export", "log", "--data-dir", str(tmp_path), "--out"]
    line = cli_error(capsys, [*base, str(tmp_path / "seq"), "--format", "sequences"])
    assert "user id 'ann lee' is empty or holds whitespace" in line and "--format parquet" in line
    assert not (tmp_path / "seq").exists()
    assert main([*base, str(tmp_path / "pq"), "--format", "parquet"]) == 0
    assert sorted(pl.read_parquet(tmp_path / "pq" / "splits.parquet")["user"]) == ["ann lee", "bo"]
    assert main([*base, str(tmp_path / "rb"), "--format", "recbole"]) == 0  # RecBole tokens may hold spaces
    preprocess(source="recbole", data_dir=tmp_path, config=cfg, input=tmp_path / "rb", name="back")
    assert raw_view(tmp_path, "back")["splits"] == raw_view(tmp_path, "log")["splits"]
