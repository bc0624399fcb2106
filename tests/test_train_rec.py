"""`gdr train-rec` end to end on a tiny synthetic dataset: pop and tiger runs, resume, sample with the
beam search, and bad input ending in one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from gdr_cli.app import main
from stages.models.registry import load_model

TINY = ["--set", "tiger.d_model=16", "--set", "tiger.d_kv=8", "--set", "tiger.n_heads=2", "--set", "tiger.d_ff=32",
        "--set", "tiger.n_layers=1", "--set", "tiger.n_decoder_layers=1", "--set", "max_len=6",
        "--set", "train.eval_every=10", "--set", "train.log_every=5", "--set", "train.warmup_steps=2"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic dataset 'toy' with a random 3-digit ID set 'rnd', and dataset 'other' with its own 'rnd'."""
    root = tmp_path_factory.mktemp("train_rec")
    for name, users in (("toy", 60), ("other", 30)):
        assert main(["preprocess", "synthetic", "--name", name, "--data-dir", str(root), "--set", f"synthetic.users={users}",
                     "--set", "synthetic.items=30", "--set", "synthetic.friends=0"]) == 0  # fmt: skip
        assert main(["build-ids", name, "--data-dir", str(root), "--method", "random", "--codebook", "4", "--levels", "2",
                     "--ids", "rnd"]) == 0  # fmt: skip
    return root


def tiger_args(root: Path, *extra: str) -> list[str]:
    return ["train-rec", "toy", "--data-dir", str(root), "--model", "tiger", "--ids", "rnd", "--run", "t", "--epochs", "1",
            "--batch-size", "64", "--lr", "3e-3", "--seed", "3", *TINY, *extra]  # fmt: skip


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_pop_still_trains(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train-rec", "toy", "--data-dir", str(root), "--model", "pop"]) == 0
    model, _ = load_model(root / "toy" / "runs" / "pop")
    assert model.kind == "pop" and model.counts.sum() > 0


def test_tiger_train_resume_sample(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(tiger_args(root)) == 0, capsys.readouterr().err
    assert "train-rec: t (tiger" in capsys.readouterr().err
    run = root / "toy" / "runs" / "t"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stage"] == "train_rec" and set(manifest["inputs"]) == {"processed", "ids"}
    stats = manifest["stats"]
    assert stats["model"] == "tiger" and stats["params"] > 0
    log = pl.read_parquet(run / "train_log.parquet").filter(pl.col("val_ndcg@10").is_not_null())
    best = log.sort("val_ndcg@10", descending=True, maintain_order=True).row(
        0, named=True
    )  # first step reaching the max
    assert (
        stats["best_val_ndcg@10"] == pytest.approx(best["val_ndcg@10"], abs=1e-6) and stats["best_step"] == best["step"]
    )
    assert stats["n_digits"] == 3 and stats["stop_reason"] == "max-epochs" and stats["examples_per_s"] > 0
    assert {"model.safetensors", "model.json", "train_log.parquet", "curve.png"} <= set(manifest["outputs"])
    model, meta = load_model(run)
    assert model.kind == "tiger" and meta == {
        "dataset": "toy",
        "max_len": 6,
        "ids": "rnd",
        "view": "item",
        "train_split": "base",
    }

    first = (run / "model.safetensors").read_bytes()  # resuming the finished run rebuilds the same weights
    assert main([*tiger_args(root), "--resume", "--max-minutes", "5"]) == 0, capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == first

    splits = pl.read_parquet(root / "toy" / "processed" / "splits.parquet")
    for flag, name in (("--keep-history", "t"), ("--exclude-history", "t-x")):
        assert main(["sample", "toy", "--data-dir", str(root), "--run", "t", "--split", "valid", "-k", "5", "--beam", "10",
                     "--name", name, flag]) == 0, capsys.readouterr().err  # fmt: skip
        recs = pl.read_parquet(root / "toy" / "recs" / name / "valid" / "recs.parquet")
        per_user = recs.group_by("user").agg(pl.col("item").n_unique().alias("distinct"), pl.len())
        assert per_user.height == splits.height and (per_user["distinct"] == 5).all() and (per_user["len"] == 5).all()
    seen = recs.join(splits.explode("train").rename({"train": "item"}), on=["user", "item"])
    assert seen.height == 0  # --exclude-history never returns a training item


def test_bad_inputs_are_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(args: list[str], *needles: str) -> None:
        capsys.readouterr()
        assert main(args) != 0
        line = error_line(capsys.readouterr().err)
        for needle in needles:
            assert needle in line, line

    base = ["train-rec", "toy", "--data-dir", str(root), "--model", "tiger"]
    fails(base, "needs an ID set")
    fails([*base, "--ids", "nope"], "ID set 'nope'", "gdr build-ids")
    shutil.copytree(root / "other" / "ids" / "rnd", root / "toy" / "ids" / "foreign")
    fails([*base, "--ids", "foreign"], "built for dataset 'other'")
    fails([*tiger_args(root), "--set", "tiger.beam=5"], "tiger.beam")
    fails([*tiger_args(root), "--init", str(root / "no-such-checkpoint")], "T5")

    # a resume must continue the same training: a changed config is refused by name
    assert main([*tiger_args(root), "--run", "r"]) == 0, capsys.readouterr().err
    fails([*tiger_args(root), "--run", "r", "--resume", "--lr", "1e-2"], "lr")

    # a diverging run stops with the step of the first non-finite loss
    fails([*tiger_args(root), "--run", "nan", "--lr", "1e30", "--set", "train.clip_norm=0", "--set", "train.warmup_steps=0"],
          "loss became", "train.lr")  # fmt: skip
    assert not (root / "toy" / "runs" / "nan").exists()

    # a corrupted checkpoint in the run folder is reported by the stage that loads it
    weights = root / "toy" / "runs" / "r" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    fails(["sample", "toy", "--data-dir", str(root), "--run", "r", "--split", "valid"], "corrupted checkpoint")


def test_ids_for_a_model_without_codes_is_one_error_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = root / "toy" / "runs"
    before = sorted(p.name for p in runs.iterdir()) if runs.exists() else []
    for model in ("pop", "sasrec"):
        capsys.readouterr()
        args = ["train-rec", "toy", "--data-dir", str(root), "--model", model, "--ids", "rnd", "--run", "x"]
        assert main(args) != 0
        line = error_line(capsys.readouterr().err)
        assert f"--ids rnd does not apply to {model}" in line and "drop --ids" in line
    assert (sorted(p.name for p in runs.iterdir()) if runs.exists() else []) == before  # nothing written
