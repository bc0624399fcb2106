"""`gdr build-ids --source run`: codes from a trained run's learned item table.

A real SASRec run is trained on the toy data; its item table, quantised by the same residual k-means,
must give exactly the codes the stage writes, the run becomes an input of the ID set, and every bad
input (no such run, a model without an item table, a flag that does not apply) is one error line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_ids_helpers import write_processed

from gdr_cli.app import main
from gdr_cli.paths import DataPaths
from stages.config.build_ids import BuildIdsConfig
from stages.ids.codeset import load_codeset
from stages.ids.methods import make_method
from stages.ids.vectors import normalize
from stages.models.registry import load_model

FAST = ["--set", "kmeans.iters=5", "--codebook", "6", "--levels", "2"]


def gdr(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> DataPaths:
    """Toy data with a 1-epoch tiny SASRec run `sas` and a popularity run `pop`."""
    root = tmp_path_factory.mktemp("fromrun")
    paths = write_processed(root, n_items=40)
    common = ["--data-dir", str(root), "-c", "tiny", "--set", "train.max_epochs=1"]
    assert main(["train-rec", "toy", "--model", "sasrec", "--run", "sas", *common]) == 0
    assert main(["train-rec", "toy", "--model", "pop", "--run", "pop", *common]) == 0
    return paths


def test_codes_quantise_the_runs_item_table(trained: DataPaths, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(trained.root)
    code, err = gdr(capsys, "build-ids", "toy", "--data-dir", root, "--source", "run", "--from-run", "sas", *FAST)
    assert code == 0, err
    manifest = json.loads((trained.ids("rqkmeans") / "manifest.json").read_text())
    assert manifest["stats"]["embedding_source"] == "run:sas"
    assert manifest["stats"]["embedding_run_model"] == "sasrec" and manifest["stats"]["embedding_dim"] == 16
    assert manifest["inputs"]["run"]["path"] == "toy/runs/sas"

    model, _ = load_model(trained.run("sas"))
    table = model.item_emb.weight.detach().numpy()[:40]  # the padding row (index 40) is not an item
    config = BuildIdsConfig.model_validate({"codebook": "6", "levels": 2, "kmeans": {"iters": 5}})
    expected, _ = make_method("rqkmeans", config).assign(40, normalize(table))
    codes = load_codeset(trained, "rqkmeans")[0].codes
    assert np.array_equal(codes[:, :2], expected)


def test_items_close_in_the_table_share_first_digits(trained: DataPaths, capsys: pytest.CaptureFixture[str]) -> None:
    """The first digit groups items by the run's vectors: within-code cosine beats across-code cosine."""
    root = str(trained.root)
    code, err = gdr(
        capsys, "build-ids", "toy", "--data-dir", root, "--source", "run", "--from-run", "sas", "--ids", "g", *FAST
    )
    assert code == 0, err
    model, _ = load_model(trained.run("sas"))
    vec = normalize(model.item_emb.weight.detach().numpy()[:40])
    first = load_codeset(trained, "g")[0].codes[:, 0]
    cos = vec @ vec.T
    same = first[:, None] == first[None, :]
    np.fill_diagonal(same, False)
    other = first[:, None] != first[None, :]
    assert cos[same].mean() > cos[other].mean() + 0.1


def test_run_without_item_table_is_refused(trained: DataPaths, capsys: pytest.CaptureFixture[str]) -> None:
    root = str(trained.root)
    code, err = gdr(
        capsys, "build-ids", "toy", "--data-dir", root, "--source", "run", "--from-run", "pop", "--ids", "p", *FAST
    )
    line = error_line(err)
    assert code == 2 and "'pop' is a pop model, which has no learned item table" in line and "--model sasrec" in line
    assert not trained.ids("p").exists()


def test_missing_run_names_the_training_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processed(tmp_path)
    code, err = gdr(capsys, "build-ids", "toy", "--data-dir", str(tmp_path), "--source", "run", *FAST)
    line = error_line(err)
    assert code == 2 and "run 'sasrec'" in line and "gdr train-rec toy --model sasrec --run sasrec" in line
    assert not (tmp_path / "toy" / "ids").exists()


def test_from_run_without_source_run_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_processed(tmp_path)
    code, err = gdr(capsys, "build-ids", "toy", "--data-dir", str(tmp_path), "--from-run", "sas", *FAST)
    line = error_line(err)
    assert code == 2 and "--from-run" in line and "--source run" in line
    assert not (tmp_path / "toy" / "ids").exists()
