"""`gdr augment --method diffuasr`: nearest-unseen mapping by hand, the augmented split keeps validation/test and
adds no history item twice, it never writes over its base, and `--train-split` end to end through the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import torch

from gdr_cli.app import main
from gdr_cli.config import resolve
from gdr_cli.errors import GdrError
from gdr_cli.paths import DataPaths
from stages import augment, preprocess
from stages.augmentation.diffuasr import nearest_unseen
from stages.augmentation.splits import open_train_split
from stages.config.augment import AugmentConfig
from stages.config.preprocess import PreprocessConfig, SyntheticConfig
from stages.data.sequences import leading_items, training_examples, training_futures
from stages.inputs import open_processed


def splits_of(train: list[list[int]]) -> pl.DataFrame:
    n = len(train)
    return pl.DataFrame(
        {"user": list(range(n)), "train": train, "valid": [0] * n, "test": [0] * n},
        schema={"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    )


def test_futures_and_leading_items_by_hand() -> None:
    s = splits_of([[1, 2, 3, 4], [5, 6]])
    ex = training_examples(s, 2)
    assert ex["target"].tolist() == [2, 3, 4, 6]
    # the items from each example's target on: the block before it is history, these guide it
    assert training_futures(s, 3).tolist() == [[2, 3, 4], [3, 4, -1], [4, -1, -1], [6, -1, -1]]
    assert leading_items(s, 3).tolist() == [[1, 2, 3], [5, 6, -1]]


def test_nearest_unseen_skips_the_history_and_earlier_picks() -> None:
    items = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    # both block positions point at item 0; position 1 (next to the real items) is filled first
    vectors = torch.tensor([[[1.0, 0.05], [1.0, 0.0]]])
    seen = torch.tensor([[-1, 3]])
    assert nearest_unseen(vectors, items, seen).tolist() == [[1, 0]]  # 0 to position 1, then 1 (0 taken)
    seen = torch.tensor([[0, 1]])  # both nearest items are history: the next nearest, then the one after
    assert nearest_unseen(vectors, items, seen).tolist() == [[3, 2]]
    # a catalogue smaller than the block: -1 once every item is excluded
    assert nearest_unseen(vectors, items[:2], torch.tensor([[0, -1]])).tolist() == [[-1, 1]]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("augment")
    cfg = PreprocessConfig(synthetic=SyntheticConfig(users=120, items=60, friends=0))
    preprocess.run(source="synthetic", data_dir=root, config=cfg, name="syn")
    return root


def small(**kw) -> AugmentConfig:
    sets = ["diffuasr.d_model=16", "diffuasr.n_layers=1", "diffuasr.epochs=1", "diffuasr.diffusion_steps=10",
            "diffuasr.sample_steps=3", "diffuasr.guide_len=5"]  # fmt: skip
    return resolve(AugmentConfig, section="augment", sets=sets, flags=kw)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_augmented_split_keeps_targets_and_adds_no_history_item_twice(root: Path) -> None:
    base_file = root / "syn" / "processed" / "splits.parquet"
    before = sha(base_file)
    manifest = augment.run(dataset="syn", data_dir=root, config=small(min_len=15, num_pseudo=4), name="a")
    base = pl.read_parquet(base_file)
    out = pl.read_parquet(root / "syn" / "augmented" / "a" / "splits.parquet")
    assert sha(base_file) == before  # the base split is never written
    assert out.columns == base.columns
    for col in ("user", "valid", "test"):
        assert out[col].equals(base[col])
    short = base["train"].list.len() < 15
    assert 0 < int(short.sum()) < base.height
    n_added = 0
    for b, a, is_short in zip(base["train"].to_list(), out["train"].to_list(), short.to_list(), strict=True):
        if not is_short:
            assert a == b
            continue
        pseudo = a[: len(a) - len(b)]
        assert a[len(pseudo) :] == b  # prepended, the real sequence unchanged after it
        assert len(pseudo) == 4 and len(set(pseudo)) == 4  # no pseudo item twice
        assert not set(pseudo) & set(b)  # never an item of the user's history
        n_added += len(pseudo)
    assert manifest.stats["pseudo_items"] == n_added
    assert manifest.stats["base_split"] == "base" and set(manifest.inputs) == {"processed"}
    paths = DataPaths(root, "syn")
    assert open_train_split(paths, open_processed(paths), "augmented/a").name == "augmented/a"


def test_augmentation_is_deterministic(root: Path) -> None:
    augment.run(dataset="syn", data_dir=root, config=small(min_len=15, num_pseudo=2, seed=3), name="d1")
    augment.run(dataset="syn", data_dir=root, config=small(min_len=15, num_pseudo=2, seed=3), name="d2")
    a, b = (pl.read_parquet(root / "syn" / "augmented" / n / "splits.parquet") for n in ("d1", "d2"))
    assert a.equals(b)


def test_augmentation_never_writes_over_its_base(root: Path) -> None:
    for name in ("base", "processed"):
        with pytest.raises(GdrError, match="write over the base split"):
            augment.run(dataset="syn", data_dir=root, config=small(), name=name)
    augment.run(dataset="syn", data_dir=root, config=small(min_len=15, num_pseudo=1), name="b1")
    folder = root / "syn" / "augmented" / "b1"
    before = sha(folder / "manifest.json")
    with pytest.raises(GdrError, match="write over its base split 'augmented/b1'"):
        augment.run(dataset="syn", data_dir=root, config=small(base="augmented/b1"), name="b1")
    assert sha(folder / "manifest.json") == before
    # augmenting an augmented split into a new name names it as the base
    m = augment.run(
        dataset="syn", data_dir=root, config=small(base="augmented/b1", min_len=16, num_pseudo=1), name="b2"
    )
    assert m.stats["base_split"] == "augmented/b1" and "base" in m.inputs


def test_a_tampered_augmented_split_is_refused(root: Path) -> None:
    augment.run(dataset="syn", data_dir=root, config=small(min_len=15, num_pseudo=1), name="t")
    path = root / "syn" / "augmented" / "t" / "splits.parquet"
    moved = pl.read_parquet(path).with_columns(valid=pl.col("test"))
    moved.write_parquet(path)
    paths = DataPaths(root, "syn")
    with pytest.raises(GdrError, match="validation/test items"):
        open_train_split(paths, open_processed(paths), "augmented/t")
    with pytest.raises(GdrError, match="unknown training split"):
        open_train_split(paths, open_processed(paths), "elsewhere/t")


def test_cli_augment_train_sample_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path), "-c", "tiny"]
    assert main(["preprocess", "synthetic", *d]) == 0
    assert (
        main(
            [
                "augment",
                "synthetic",
                *d,
                "--method",
                "diffuasr",
                "--name",
                "aug",
                "--min-len",
                "15",
                "--num-pseudo",
                "3",
            ]
        )
        == 0
    )
    assert main(["augment", "synthetic", *d, "--name", "base"]) == 2
    assert "write over the base split" in capsys.readouterr().err
    for model in ("pop", "sasrec"):
        assert (
            main(
                [
                    "train-rec",
                    "synthetic",
                    *d,
                    "--model",
                    model,
                    "--train-split",
                    "augmented/aug",
                    "--run",
                    f"{model}-aug",
                ]
            )
            == 0
        )
        run = tmp_path / "synthetic" / "runs" / f"{model}-aug" / "manifest.json"
        text = run.read_text()
        assert '"train_split": "augmented/aug"' in text and "synthetic/augmented/aug" in text
        assert main(["sample", "synthetic", *d, "--run", f"{model}-aug"]) == 0
    assert main(["build-ids", "synthetic", *d, "--method", "random", "--ids", "rnd"]) == 0
    assert (
        main(
            [
                "diffuse",
                "synthetic",
                *d,
                "--ids",
                "rnd",
                "--train-split",
                "augmented/aug",
                "--run",
                "dif-aug",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "synthetic" / "runs" / "dif-aug" / "manifest.json").read_text())
    assert manifest["stats"]["train_split"] == "augmented/aug" and set(manifest["inputs"]) == {
        "processed",
        "ids",
        "train_split",
    }
    assert main(["train-rec", "synthetic", *d, "--model", "sasrec", "--train-split", "augmented/none"]) == 2
    assert "augmented/none" in capsys.readouterr().err
    assert main(["evaluate", "synthetic", *d]) == 0
    table = pl.read_parquet(tmp_path / "synthetic" / "reports" / "test" / "comparison.parquet")
    assert {"pop-aug", "sasrec-aug"} <= set(table["run"].to_list())
