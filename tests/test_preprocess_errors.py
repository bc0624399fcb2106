"""`gdr preprocess` on bad input: one clear line, non-zero exit, nothing on disk damaged; fetch fallbacks."""

from __future__ import annotations

import gzip
import shutil
import zipfile
from pathlib import Path

import pytest

from gdr_cli.app import main
from gdr_cli.errors import GdrError
from stages.config.preprocess import PreprocessConfig
from stages.data.sources import download, movielens
from stages.preprocess import run

FIX = Path(__file__).parent / "fixtures" / "preprocess"
LOOSE = PreprocessConfig(min_user_interactions=0, min_item_interactions=0)


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect failure, return its single error line."""
    code = main(["preprocess", *argv])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def books(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ratings_Books.csv"
    path.write_text(text)
    return path


def test_unknown_source_lists_known(tmp_path, capsys):
    line = cli_error(capsys, ["nope", "--data-dir", str(tmp_path)])
    assert "unknown source 'nope'" in line and "movielens-100k" in line and "synthetic" in line
    with pytest.raises(GdrError, match="unknown source"):
        run(source="nope", data_dir=tmp_path, config=PreprocessConfig())


def test_unknown_option_and_config_key(tmp_path, capsys):
    assert "No such option: --bogus" in cli_error(capsys, ["synthetic", "--bogus", "--data-dir", str(tmp_path)])
    line = cli_error(capsys, ["synthetic", "--set", "synthetic.userz=5", "--data-dir", str(tmp_path)])
    assert "unknown config key 'synthetic.userz'" in line


def test_missing_file(tmp_path, capsys):
    line = cli_error(capsys, ["amazon-books", "--input", str(tmp_path / "none.csv"), "--data-dir", str(tmp_path)])
    assert "not found" in line and "none.csv" in line
    with pytest.raises(GdrError, match=r"no MovieLens 1M ratings\.dat"):
        run(source="movielens-1m", data_dir=tmp_path, config=LOOSE, input=tmp_path)


def test_wrong_delimiter_and_columns(tmp_path, capsys):
    path = books(tmp_path, "A1\t0001\t5.0\t100\n")
    line = cli_error(capsys, ["amazon-books", "--input", str(path), "--data-dir", str(tmp_path)])
    assert "expected 4 fields separated by ','" in line and f"{path}:1" in line
    line = cli_error(capsys, ["interactions", "--input", str(FIX / "interactions.csv"), "--data-dir", str(tmp_path)])
    assert "no column 'user_id'" in line and "--user-col" in line
    bad = tmp_path / "x.inter"
    bad.write_text("user_id,item_id,timestamp\n1,2,3\n")
    with pytest.raises(GdrError, match="bad RecBole header field") as err:
        run(source="recbole", data_dir=tmp_path, config=LOOSE, input=bad)
    assert f"{bad}:1:1" in err.value.line()


def test_short_line_is_located(tmp_path):
    path = books(tmp_path, "A,1,5.0,100\nB,2,4.0,200\nC,3\n")
    with pytest.raises(GdrError, match="expected 4 fields") as err:
        run(source="amazon-books", data_dir=tmp_path, config=LOOSE, input=path)
    assert f"{path}:3" in err.value.line()


def test_non_numeric_timestamp(tmp_path, capsys):
    path = books(tmp_path, "A,1,5.0,100\nB,2,4.0,yesterday\n")
    line = cli_error(capsys, ["amazon-books", "--input", str(path), "--data-dir", str(tmp_path)])
    assert "non-numeric timestamp 'yesterday'" in line and f"{path}:2:4" in line
    inter = tmp_path / "t.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3.0\n1\t3\tlate\n")
    with pytest.raises(GdrError, match="non-numeric timestamp") as err:
        run(source="recbole", data_dir=tmp_path, config=LOOSE, input=inter)
    assert f"{inter}:3:3" in err.value.line()


def test_truncated_gzip(tmp_path, capsys):
    folder = tmp_path / "az"
    folder.mkdir()
    data = (FIX / "amazon-2014" / "reviews_Beauty_5.json.gz").read_bytes()
    (folder / "reviews_Beauty_5.json.gz").write_bytes(data[: len(data) // 2])
    line = cli_error(
        capsys, ["amazon-2014", "--category", "Beauty", "--input", str(folder), "--data-dir", str(tmp_path)]
    )
    assert "truncated or corrupt" in line and "reviews_Beauty_5.json.gz" in line
    assert "needs a category" in cli_error(capsys, ["amazon-2014", "--input", str(folder), "--data-dir", str(tmp_path)])


def test_bad_review_line_is_located(tmp_path):
    folder = tmp_path / "az"
    folder.mkdir()
    with gzip.open(folder / "reviews_Toys_5.json.gz", "wt") as fh:
        fh.write(
            '{"reviewerID": "A", "asin": "B", "unixReviewTime": 5}\n{"reviewerID": "A", "asin": "C", "unixReviewTime": "soon"}\n'
        )
    with pytest.raises(GdrError, match="bad review line") as err:
        run(source="amazon-2014", data_dir=tmp_path, config=LOOSE.model_copy(update={"category": "Toys"}), input=folder)
    assert "reviews_Toys_5.json.gz:2" in err.value.line()


def test_bad_sequence_line(tmp_path):
    (tmp_path / "user_sequence.txt").write_text("u1 a b c\nu2\n")
    with pytest.raises(GdrError, match="needs a user and at least one item") as err:
        run(source="sequences", data_dir=tmp_path, config=LOOSE, input=tmp_path)
    assert "user_sequence.txt:2" in err.value.line()


def test_empty_after_k_core_names_thresholds(tmp_path, capsys):
    line = cli_error(capsys, ["amazon-books", "--input", str(FIX / "ratings_Books.csv"), "--data-dir", str(tmp_path)])
    assert "no interactions left after the k-core (users >= 5, items >= 5)" in line and "--min-user" in line


def test_failed_run_keeps_previous_output(tmp_path, capsys):
    assert (
        main(
            [
                "preprocess",
                "amazon-books",
                "--input",
                str(FIX / "ratings_Books.csv"),
                "--name",
                "b",
                "--min-user",
                "0",
                "--min-item",
                "0",
                "--data-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    folder = tmp_path / "b" / "processed"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    bad = books(tmp_path, "A,1,5.0,100\nB,2,4.0,never\n")
    cli_error(capsys, ["amazon-books", "--input", str(bad), "--name", "b", "--data-dir", str(tmp_path)])
    cli_error(
        capsys, ["amazon-books", "--input", str(FIX / "ratings_Books.csv"), "--name", "b", "--data-dir", str(tmp_path)]
    )
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["processed"]  # no staging leftovers


# --- MovieLens 100K fetch: GroupLens, then the recbole wheel on PyPI, then a clear error --------


def fake_wheel(path: Path) -> Path:
    """A zip with the recbole wheel's internal layout and a tiny ml-100k inside."""
    with zipfile.ZipFile(path, "w") as zf:
        inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        inter += "".join(f"{u}\t{i}\t3\t{100 * u + i}\n" for u in range(1, 5) for i in range(1, 5))
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", inter)
        zf.writestr(
            "recbole/dataset_example/ml-100k/ml-100k.item", "item_id:token\tmovie_title:token_seq\n1\tToy Story\n"
        )
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.user", "user_id:token\tage:token\n1\t24\n")
        zf.writestr("recbole/__init__.py", "")
    return path


def test_extract_members_from_wheel(tmp_path):
    wheel = fake_wheel(tmp_path / "recbole-1.2.1-py3-none-any.whl")
    out = download.extract_members(wheel, movielens.RECBOLE_MEMBERS, tmp_path / "cache")
    assert sorted(p.name for p in out) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    assert (tmp_path / "cache" / "ml-100k.item").read_text().endswith("Toy Story\n")
    with pytest.raises(GdrError, match="archive lacks"):
        download.extract_members(wheel, {"recbole/nothing.txt": "x"}, tmp_path / "cache")
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(GdrError, match="not a valid zip"):
        download.extract_members(tmp_path / "junk.whl", {"a": "b"}, tmp_path / "cache")


def test_fallback_to_wheel_then_cache(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    def pip_ok(requirement, folder, timeout):
        assert requirement == "recbole==1.2.1"
        return fake_wheel(folder / "recbole-1.2.1-py3-none-any.whl")

    monkeypatch.setattr(download, "download", offline)
    monkeypatch.setattr(download, "pip_download", pip_ok)
    m = run(source="movielens-100k", data_dir=tmp_path, config=LOOSE)
    assert m.stats["users"] == 4 and m.stats["interactions"] == 16
    cache = tmp_path / "raw" / "movielens-100k"
    assert sorted(p.name for p in cache.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    monkeypatch.setattr(download, "pip_download", offline)  # the cache is used now, no fetch at all
    assert run(source="movielens-100k", data_dir=tmp_path, config=LOOSE, name="again").stats == m.stats


def test_no_network_at_all_is_a_clear_error(tmp_path, monkeypatch, capsys):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(download, "download", offline)
    monkeypatch.setattr(download, "pip_download", offline)
    line = cli_error(capsys, ["movielens-100k", "--data-dir", str(tmp_path)])
    assert "could not fetch MovieLens 100K" in line and "--input" in line and movielens.ML100K_URL in line
    assert not (tmp_path / "movielens-100k").exists()


def test_blank_lines_crlf_and_bom_are_tolerated(tmp_path):
    path = books(tmp_path, "")
    path.write_bytes(b"\xef\xbb\xbfA,1,5.0,100\r\nA,2,4.0,200\r\n\r\nA,3,4.0,300\r\n\r\n")
    m = run(source="amazon-books", data_dir=tmp_path, config=LOOSE, input=path)
    assert m.stats["interactions"] == 3
    (tmp_path / "one.csv").write_text("A,1,5.0,100\nA,2,4.0,200\n")
    with pytest.raises(GdrError, match="no interactions left") as err:
        run(source="amazon-books", data_dir=tmp_path, config=LOOSE, input=tmp_path / "one.csv")
    assert "no user has 3 interactions" in err.value.line()


# --- side files (Last.fm friends/artists, RecBole .item/.net, text folders): same wrapping as main files ---


def lastfm_copy(tmp_path: Path, **replace: bytes) -> Path:
    """The Last.fm fixture under its real names, with some files' bytes replaced."""
    out = tmp_path / "fm"
    out.mkdir()
    for f in (FIX / "lastfm").glob("*.dat.txt"):
        name = f.name.removesuffix(".txt")
        (out / name).write_bytes(replace.get(name.removesuffix(".dat"), f.read_bytes()))
    return out


def recbole_copy(tmp_path: Path, **replace: bytes) -> Path:
    out = tmp_path / "rb"
    out.mkdir()
    for f in (FIX / "recbole").iterdir():
        (out / f.name).write_bytes(replace.get(f.suffix.lstrip("."), f.read_bytes()))
    return out / "tiny.inter"


@pytest.mark.parametrize(
    "name,content,message,where",
    [
        ("user_friends", b"userID\n1\n", "no column 'friendID'", "user_friends.dat:1"),
        ("user_friends", b"userID,friendID\n1,2\n", "no column 'userID'", "user_friends.dat:1"),
        (
            "user_friends",
            b"userID\tfriendID\n1\t2\n\n3\n",
            "expected 2 fields separated by '\\t'",
            "user_friends.dat:4",
        ),
        ("user_friends", b"userID\tfriendID\n1\t2\n3\t\n", "empty friendID field", "user_friends.dat:3:2"),
        ("artists", b"id\tname\turl\tpictureURL\n10\tBj\xf6rk\tu\tp\n", "not UTF-8", "artists.dat:2"),
        ("artists", b"id\turl\tpictureURL\n10\tu\tp\n", "no column 'name'", "artists.dat:1"),
        ("artists", b"id\tname\turl\tpictureURL\n10\tA\tu\tp\n11\tB u p\n", "expected 4 fields", "artists.dat:3"),
    ],
)
def test_bad_lastfm_side_file(tmp_path, capsys, name, content, message, where):
    folder = lastfm_copy(tmp_path, **{name: content})
    line = cli_error(capsys, ["lastfm-2k", "--input", str(folder), "--data-dir", str(tmp_path / "d")])
    assert message in line and f"{folder}/{where}" in line, line
    assert not (tmp_path / "d" / "lastfm-2k").exists()  # nothing written


@pytest.mark.parametrize(
    "suffix,content,message,where",
    [
        (
            "item",
            b"item_id:token\ttitle:token_seq\tyear:token\n10\tToy Story\t1995\n11\tGoldenEye\n",
            "expected 3 fields",
            "tiny.item:3",
        ),
        ("item", b"item_id:token\ttitle:token_seq\n10,Toy Story\n", "expected 2 fields", "tiny.item:2"),
        ("item", b"item_id:token\ttitle:token_seq\n10\tCaf\xe9\n", "not UTF-8", "tiny.item:2"),
        ("item", b"item_id:token\ttitle:token_seq\n\tNo id\n", "empty", "tiny.item:2:1"),
        ("net", b"source_id:token\ttarget_id:token\n1\t2\n2 3\n", "expected 2 fields", "tiny.net:3"),
        ("net", b"source_id:token\ttarget_id:token\n1\t2\n2\t\xff\n", "not UTF-8", "tiny.net:3"),
        ("net", b"source_id:token\n1\n", "needs two :token fields", "tiny.net:1"),
        (
            "inter",
            b"user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3.0\n1\t3\xff\t4.0\n",
            "not UTF-8",
            "tiny.inter:3",
        ),
    ],
)
def test_bad_recbole_file(tmp_path, capsys, suffix, content, message, where):
    inter = recbole_copy(tmp_path, **{suffix: content})
    line = cli_error(capsys, ["recbole", "--input", str(inter), "--data-dir", str(tmp_path / "d")])
    assert message in line and f"{inter.parent}/{where}" in line, line


def test_text_folder_with_undecodable_bytes(tmp_path, capsys):
    for name in ("user_sequence.txt", "item_plain_text.txt", "friend_sequence.txt"):
        folder = tmp_path / name.split(".")[0]
        shutil.copytree(FIX / "sequences", folder)
        (folder / name).write_bytes((FIX / "sequences" / name).read_bytes() + b"x \xc3\x28 y\n")
        n = (FIX / "sequences" / name).read_bytes().count(b"\n") + 1
        line = cli_error(capsys, ["sequences", "--input", str(folder), "--data-dir", str(tmp_path / "d")])
        assert "not UTF-8" in line and f"{folder / name}:{n}" in line, line


def test_main_file_undecodable_line_is_located(tmp_path):
    path = tmp_path / "ratings_Books.csv"
    path.write_bytes(b"A,1,5.0,100\nB\xff,2,4.0,200\n")
    with pytest.raises(GdrError, match="not UTF-8") as err:
        run(source="amazon-books", data_dir=tmp_path, config=LOOSE, input=path)
    assert f"{path}:2" in err.value.line()
