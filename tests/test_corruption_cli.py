"""`gdr train-rec --model tiger --use-diffusion` end to end on a tiny synthetic dataset with a friend graph:
off is bit-identical to the plain run, on logs each loss term, takes its cross-view tokens from the other
view's run or ID set, the KL from the frozen other-view run, and bad input ends in one error line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch

from gdr_cli.app import main
from gdr_cli.manifest import manifest_hash
from stages.models.registry import load_model
from stages.models.tiger_corruption import code_token_ids

TINY = ["--set", "tiger.d_model=16", "--set", "tiger.d_kv=8", "--set", "tiger.n_heads=2", "--set", "tiger.d_ff=32",
        "--set", "tiger.n_layers=1", "--set", "tiger.n_decoder_layers=1", "--set", "tiger.beam=10", "--set", "max_len=6",
        "--set", "train.eval_every=10", "--set", "train.log_every=5", "--set", "train.warmup_steps=2"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset 'syn' with item IDs 'rnd', user IDs 'urnd' and a social-view tiger run 'soc'."""
    root = tmp_path_factory.mktemp("corruption")
    d = ["--data-dir", str(root)]
    assert (
        main(
            [
                "preprocess",
                "synthetic",
                "--name",
                "syn",
                *d,
                "--set",
                "synthetic.users=60",
                "--set",
                "synthetic.items=30",
            ]
        )
        == 0
    )
    assert main(["build-ids", "syn", *d, "--method", "random", "--codebook", "4", "--levels", "2", "--ids", "rnd"]) == 0
    assert main(["build-ids", "syn", *d, "--view", "social", "--method", "random", "--codebook", "3", "--levels", "2",
                 "--ids", "urnd"]) == 0  # fmt: skip
    assert main(tiger(root, "soc", "--view", "social", "--ids", "urnd")) == 0
    return root


def tiger(root: Path, run: str, *extra: str) -> list[str]:
    ids = [] if "--ids" in extra else ["--ids", "rnd"]
    return ["train-rec", "syn", "--data-dir", str(root), "--model", "tiger", *ids, "--run", run, "--epochs", "1",
            "--batch-size", "64", "--lr", "3e-3", "--seed", "3", *TINY, *extra]  # fmt: skip


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_off_is_bit_identical_to_the_plain_run(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(tiger(root, "plain")) == 0
    off = ["--use-diffusion", "0", "--diffusion-timesteps", "7", "--lambda-mask", "0.7", "--diffusion-cross-prob", "1",
           "--other-view-run", "soc"]  # fmt: skip
    assert main(tiger(root, "off", *off)) == 0
    runs = root / "syn" / "runs"
    assert (runs / "off" / "model.safetensors").read_bytes() == (runs / "plain" / "model.safetensors").read_bytes()
    assert json.loads((runs / "off" / "model.json").read_text()) == json.loads(
        (runs / "plain" / "model.json").read_text()
    )
    log = pl.read_parquet(runs / "off" / "train_log.parquet")
    assert log.equals(
        pl.read_parquet(runs / "plain" / "train_log.parquet").with_columns(log["wall_s"], log["examples_per_s"])
    )
    assert not [c for c in log.columns if c.startswith("loss_")]


def test_cross_view_and_kl_from_the_other_run(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(tiger(root, "kl", "--use-diffusion", "1", "--other-view-run", "soc", "--lambda-kl", "0.2")) == 0
    err = capsys.readouterr().err
    assert "single view" not in err and "no KL" not in err
    run = root / "syn" / "runs" / "kl"
    log = pl.read_parquet(run / "train_log.parquet").filter(pl.col("loss").is_not_null())
    assert {"loss_ce", "loss_mask", "loss_kl"} <= set(log.columns) and (log["loss_kl"] > 0).all()
    total = log["loss_ce"] + 0.1 * log["loss_mask"] + 0.2 * log["loss_kl"]
    assert ((log["loss"] - total).abs() < 1e-4).all()
    assert "(ce " in (run / "train.log").read_text()
    ref = json.loads((run / "manifest.json").read_text())["inputs"]["other_view_run"]
    assert ref == {"path": "syn/runs/soc", "stage": "train_rec", "sha256": manifest_hash(root / "syn" / "runs" / "soc")}
    model, _ = load_model(run)
    other, _ = load_model(root / "syn" / "runs" / "soc")
    pool = code_token_ids(other.codes, other.init_kwargs["vocab_sizes"])
    assert model.corruption is not None and model.corruption.cross_tokens.tolist() == pool.tolist()
    assert model.init_kwargs["corruption"]["n_cross"] == len(pool) and model.corruption.timesteps == 100
    assert (
        main(["sample", "syn", "--data-dir", str(root), "--run", "kl", "--split", "valid", "-k", "5", "--beam", "10"])
        == 0
    )
    recs = pl.read_parquet(root / "syn" / "recs" / "kl" / "valid" / "recs.parquet")
    assert recs["item"].null_count() == 0 and recs.group_by("user").agg(pl.col("item").n_unique())["item"].min() == 5


def test_cross_view_from_ids_and_single_view(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(tiger(root, "ids", "--use-diffusion", "1", "--other-view-ids", "urnd")) == 0
    err = capsys.readouterr().err
    assert "no KL term" in err and "single view" not in err
    model, _ = load_model(root / "syn" / "runs" / "ids")
    users = pl.read_parquet(root / "syn" / "ids" / "urnd" / "codes.parquet")
    pool = code_token_ids(torch.tensor(users["code"].to_list()), [3, 3, int(max(c[2] for c in users["code"])) + 1])
    assert set(model.corruption.cross_tokens.tolist()) == set(pool.tolist())
    log = pl.read_parquet(root / "syn" / "runs" / "ids" / "train_log.parquet").filter(pl.col("loss").is_not_null())
    assert (log["loss_kl"] == 0).all()
    inputs = json.loads((root / "syn" / "runs" / "ids" / "manifest.json").read_text())["inputs"]
    assert inputs["other_view_ids"]["path"] == "syn/ids/urnd" and "other_view_run" not in inputs
    assert main(tiger(root, "single", "--use-diffusion", "1")) == 0
    err = capsys.readouterr().err
    assert err.count("single view") == 1
    assert load_model(root / "syn" / "runs" / "single")[0].corruption.n_cross == 0


def test_bad_other_view_is_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fails(extra: list[str], *needles: str) -> None:
        capsys.readouterr()
        assert main(tiger(root, "bad", "--use-diffusion", "1", *extra)) != 0
        line = error_line(capsys.readouterr().err)
        assert all(n in line for n in needles), line

    fails(["--other-view-run", "nope"], "no run 'nope'", "train-rec syn --model tiger --view social")
    fails(["--other-view-run", "plain"], "item view, the same as this run")
    fails(["--other-view-run", "soc", "--other-view-ids", "urnd"], "both", "give one")
    fails(["--other-view-ids", "rnd"], "is for the item view, not social")
    fails(["--diffusion-beta-max", "2"], "diffusion_beta_max")
    # a run of another dataset (copied into this one's runs/) is refused by its manifest
    assert main(["preprocess", "synthetic", "--name", "syn2", "--data-dir", str(root), "--set", "synthetic.users=60",
                 "--set", "synthetic.items=30"]) == 0  # fmt: skip
    assert main(["build-ids", "syn2", "--data-dir", str(root), "--method", "random", "--codebook", "4", "--levels", "2",
                 "--ids", "rnd"]) == 0  # fmt: skip
    shutil.copytree(root / "syn" / "runs" / "soc", root / "syn2" / "runs" / "soc")
    capsys.readouterr()
    args = tiger(root, "bad", "--use-diffusion", "1", "--other-view-run", "soc")
    assert main([args[0], "syn2", *args[2:]]) != 0
    assert "trained on dataset 'syn', not 'syn2'" in error_line(capsys.readouterr().err)
    assert not (root / "syn" / "runs" / "bad").exists()


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # long option names are cut at 80 columns
    assert main(["train-rec", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("--use-diffusion", "--diffusion-timesteps", "--diffusion-beta-max", "--diffusion-cross-prob",
                 "--lambda-mask", "--lambda-kl", "--noise-head-dropout", "--other-view-run", "--other-view-ids"):  # fmt: skip
        assert name in out
