"""The knowledge graph `preprocess` writes (kg.parquet): item -> attribute edges of each source, by hand."""

from __future__ import annotations

import polars as pl
import pytest

from stages.config.preprocess import PreprocessConfig, SyntheticConfig
from stages.data.kg import kg_table
from stages.preprocess import run
from tests.test_preprocess import FIX, LOOSE, fixture_path


def kg_rows(root, name: str) -> list[tuple[int, str, str]]:
    return [tuple(r) for r in pl.read_parquet(root / name / "processed" / "kg.parquet").iter_rows()]


def test_movielens_genres_and_year(tmp_path) -> None:
    """u.item flags 0 0 0 1 1 1 0... name genres 3-5 (Animation, Children's, Comedy); 01-Jan-1995 gives the year."""
    run(source="movielens-100k", data_dir=tmp_path, config=LOOSE, input=FIX / "ml-100k", name="ml")
    per_item = [("genre", "Animation"), ("genre", "Children's"), ("genre", "Comedy"), ("year", "1995")]
    assert kg_rows(tmp_path, "ml") == [(i, r, e) for i in range(5) for r, e in per_item]
    run(source="movielens-1m", data_dir=tmp_path, config=LOOSE, input=FIX / "ml-1m", name="m1")
    assert {(r, e) for _, r, e in kg_rows(tmp_path, "m1")} >= {("year", "1995")}


def test_recbole_item_fields(tmp_path) -> None:
    """tiny.item: release_year:token is an attribute; movie_title (free text) and price (float) are not."""
    m = run(source="recbole", data_dir=tmp_path, config=LOOSE, input=FIX / "recbole", name="rb")
    assert kg_rows(tmp_path, "rb") == [(i, "release_year", "1995") for i in range(5)]
    assert m.stats["kg_edges"] == 5 and m.stats["kg_entities"] == 1 and m.stats["kg_items"] == 5


def test_amazon_categories_and_brand(tmp_path) -> None:
    """B00012 is the only 'Hair Care' item (an entity of one item: dropped) and has no brand."""
    cfg = LOOSE.model_copy(update={"category": "Beauty"})
    run(source="amazon-2014", data_dir=tmp_path, config=cfg, input=FIX / "amazon-2014", name="az")
    expected = [(i, "category", "Beauty") for i in range(5)]
    expected += [(i, r, e) for i in (0, 1, 3, 4) for r, e in (("brand", "L'Oreal"), ("category", "Makeup"))]
    assert kg_rows(tmp_path, "az") == sorted(expected)


def test_lastfm_tags_from_training_events_only(tmp_path) -> None:
    """Tags of each user's last two (validation, test) events are left out; then entities of one artist go.

    Kept events: u1 10:metal 11:pop; u2 11:rock 10:#2; u3 12:pop 13:pop 10:metal; u4 13:metal 12:metal;
    u5 (dropped user, 1 event) 14:#1. rock, #2 and #1 link one artist each -> dropped. With the held-out
    events, rock would also tag artist 12 (u1's validation event) and stay."""
    run(source="lastfm-2k", data_dir=tmp_path, config=LOOSE, input=fixture_path("lastfm", tmp_path), name="fm")
    assert kg_rows(tmp_path, "fm") == [(0, "tag", "metal"), (1, "tag", "pop"), (2, "tag", "metal"), (2, "tag", "pop"),
                                       (3, "tag", "metal"), (3, "tag", "pop")]  # fmt: skip


def test_synthetic_words_and_sources_without_attributes(tmp_path) -> None:
    cfg = PreprocessConfig(synthetic=SyntheticConfig(users=100, items=40, clusters=4))
    m = run(source="synthetic", data_dir=tmp_path, config=cfg, name="syn")
    kg = pl.read_parquet(tmp_path / "syn" / "processed" / "kg.parquet")
    items = pl.read_parquet(tmp_path / "syn" / "processed" / "items.parquet")
    words = items.select("item", pl.col("text").str.split(" ").alias("entity")).explode("entity").unique()
    linked = words.filter(pl.len().over("entity") >= 2).with_columns(pl.lit("word").alias("relation"))
    assert kg.sort("item", "entity").equals(linked.select("item", "relation", "entity").sort("item", "entity"))
    assert m.stats["kg_edges"] == kg.height > 0
    m = run(source="sequences", data_dir=tmp_path, config=LOOSE, input=FIX / "sequences", name="seq")
    assert m.stats["kg_edges"] == 0 and pl.read_parquet(tmp_path / "seq" / "processed" / "kg.parquet").height == 0


def test_kg_table_rules() -> None:
    """Unknown items, blank entities and duplicates go; an event edge of a held-out interaction goes."""
    items = pl.DataFrame({"item": [0, 1], "raw_id": ["a", "b"]}, schema={"item": pl.Int32, "raw_id": pl.String})
    users = pl.DataFrame({"user": [0], "raw_id": ["u"]}, schema={"user": pl.Int32, "raw_id": pl.String})
    inter = pl.DataFrame({"user": [0, 0, 0], "item": [0, 1, 0], "timestamp": [1, 2, 3]},
                         schema={"user": pl.Int32, "item": pl.Int32, "timestamp": pl.Int64})  # fmt: skip
    attrs = pl.DataFrame({
        "raw_id": ["a", "b", "b", "zz", "a", "b", "a"], "relation": ["g"] * 7, "entity": ["x", "x", " x ", "x", " ", "y", "y"],
        "user": ["u"] * 7, "timestamp": [1, 1, 1, 1, 1, 2, 3],
    })  # fmt: skip
    kg = kg_table(attrs, items, users, inter)
    # (b, y, t=2) and (a, y, t=3) are the validation and test interactions: y is gone
    assert kg.rows() == [(0, "g", "x"), (1, "g", "x")]
    assert kg_table(None, items, users, inter).height == 0


@pytest.mark.parametrize("name", ["ml-100k"])
def test_real_movielens_kg(tmp_path, ml100k_dir, name) -> None:
    m = run(source="recbole", data_dir=tmp_path, config=PreprocessConfig(), input=ml100k_dir, name=name)
    kg = pl.read_parquet(tmp_path / name / "processed" / "kg.parquet")
    assert set(kg["relation"].unique()) == {"class", "release_year"}
    assert {"Comedy", "Drama", "Thriller"} <= set(kg.filter(pl.col("relation") == "class")["entity"])
    assert m.stats["kg_items"] >= 0.99 * m.stats["items"]


def test_recbole_kg_and_link_files(tmp_path, capsys) -> None:
    """A RecBole `.kg` + `.link` pair (what `gdr export --format recbole` writes): edges whose head is an item's
    entity become that item's attributes; a head that names no item (an entity -> entity edge) is ignored."""
    from gdr_cli.app import main

    src = tmp_path / "rb"
    src.mkdir()
    (src / "rb.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                                  + "".join(f"{u}\t{i}\t{t}\n" for u in "ab" for t, i in enumerate(["x", "y", "z"])))  # fmt: skip
    (src / "rb.kg").write_text("head_id:token\trelation_id:token\ttail_id:token\n"
                               "m.x\tgenre\thip hop\nm.y\tgenre\thip hop\nm.z\tgenre\tjazz\nm.hiphop\tpart_of\tmusic\n")  # fmt: skip
    (src / "rb.link").write_text("item_id:token\tentity_id:token\nx\tm.x\ny\tm.y\nz\tm.z\n")
    run(source="recbole", data_dir=tmp_path, config=LOOSE, input=src, name="rb")
    items = dict(pl.read_parquet(tmp_path / "rb" / "processed" / "items.parquet").select("raw_id", "item").iter_rows())
    # 'jazz' links one item only (dropped), 'music' hangs off no item
    assert kg_rows(tmp_path, "rb") == sorted([(items["x"], "genre", "hip hop"), (items["y"], "genre", "hip hop")])
    (src / "rb.link").unlink()
    capsys.readouterr()
    assert main(["preprocess", "recbole", "--input", str(src), "--name", "rb2", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ".link" in err and "rb.kg" in err
