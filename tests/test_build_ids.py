"""`gdr build-ids` from the command line: a real run, flags reaching the config, and every bad input
ending in one error line with a fix (unknown method, no social graph, no processed data,
an ID set of another dataset, an embedder that cannot be loaded)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_ids_helpers import write_processed

from gdr_cli.app import main
from gdr_cli.errors import GdrError
from gdr_cli.paths import DataPaths
from stages.ids.codeset import CodeSet, load_codeset


def gdr(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["build-ids", *args])
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_cli_builds_codes_with_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_processed(tmp_path, n_items=40)
    code, err = gdr(
        capsys,
        "toy",
        "--data-dir",
        str(tmp_path),
        "--method",
        "rqkmeans",
        "--codebook",
        "8",
        "--levels",
        "2",
        "--no-balanced",
        "--source",
        "collab",
        "--set",
        "kmeans.iters=5",
        "--set",
        "embed.dim=16",
        "--ids",
        "mine",
    )
    assert code == 0, err
    assert "build-ids: 40 items -> 3-digit codes" in err
    manifest = json.loads((paths.ids("mine") / "manifest.json").read_text())
    assert manifest["config"]["kmeans"] == {**manifest["config"]["kmeans"], "balanced": False, "iters": 5}
    assert manifest["stats"]["embedding_source"] == "collab" and manifest["stats"]["vocab_sizes"][:2] == [8, 8]
    assert sorted(manifest["outputs"]) == ["codes.parquet", "usage.png"]


def test_unknown_method_lists_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processed(tmp_path)
    code, err = gdr(capsys, "toy", "--data-dir", str(tmp_path), "--method", "kmeans")
    line = error_line(err)
    assert (
        code == 2
        and "unknown ID method 'kmeans'" in line
        and "rqkmeans, rqvae, pq, random, sequential, collaborative" in line
    )
    assert not (tmp_path / "toy" / "ids").exists()


def test_social_view_without_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processed(tmp_path, social=False)
    for method in ("rqkmeans", "random"):
        code, err = gdr(
            capsys, "toy", "--data-dir", str(tmp_path), "--view", "social", "--codebook", "8", "--method", method
        )
        line = error_line(err)
        assert code == 2 and "has no social graph" in line and "--view item" in line


def test_missing_processed_data_names_preprocess(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = gdr(capsys, "nothing", "--data-dir", str(tmp_path))
    line = error_line(err)
    assert code == 2 and "processed data" in line and "gdr preprocess nothing" in line


def test_embedder_that_cannot_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processed(tmp_path)
    code, err = gdr(
        capsys, "toy", "--data-dir", str(tmp_path), "--source", "text", "--embedder", str(tmp_path / "no-such-model")
    )
    line = error_line(err)
    assert code == 2 and "embedder" in line and "leave --embedder unset" in line
    assert not (tmp_path / "toy" / "ids").exists()


def test_id_set_of_another_dataset_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processed(tmp_path, "toy")
    other = write_processed(tmp_path, "other")
    assert gdr(capsys, "toy", "--data-dir", str(tmp_path), "--method", "sequential", "--codebook", "8")[0] == 0
    shutil.copytree(DataPaths(tmp_path, "toy").ids("sequential"), other.ids("sequential"))
    with pytest.raises(GdrError, match="built for dataset 'toy', not 'other'") as err:
        load_codeset(other, "sequential")
    assert "gdr build-ids other --method sequential --ids sequential" in err.value.line()


def test_bad_config_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processed(tmp_path)
    code, err = gdr(capsys, "toy", "--data-dir", str(tmp_path), "--set", "kmeans.slack=-1")
    assert code == 2 and "kmeans.slack" in error_line(err)


def test_ml100k_rqkmeans(tmp_path: Path, ml100k_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preprocess = pytest.importorskip("stages.preprocess")
    from stages.config.preprocess import PreprocessConfig

    preprocess.run(source="recbole", input=ml100k_dir, name="ml", data_dir=tmp_path, config=PreprocessConfig())
    code, err = gdr(
        capsys,
        "ml",
        "--data-dir",
        str(tmp_path),
        "--method",
        "rqkmeans",
        "--codebook",
        "32",
        "--source",
        "text",
        "--set",
        "kmeans.iters=10",
        "--set",
        "embed.dim=32",
    )
    assert code == 0, err
    paths = DataPaths(tmp_path, "ml")
    cs, manifest = load_codeset(paths, "rqkmeans")
    assert cs.n_items == manifest.stats["entities"] and len(np.unique(cs.codes, axis=0)) == cs.n_items
    assert manifest.stats["vocab_sizes"][:3] == [32, 32, 32] and manifest.stats["embedding_source"] == "text:tfidf-svd"
    assert manifest.stats["usage"][0]["used"] == 32
    again = CodeSet.load(paths.ids("rqkmeans"))
    assert np.array_equal(again.codes, cs.codes) and again.vocab_sizes == cs.vocab_sizes
