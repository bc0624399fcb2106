"""`gdr tune`: two trials write a persistent study that a second call continues, each trial's value is
its run's validation NDCG@10 with the validation curve reported for pruning, the best config is a YAML
that `--config` loads; a missing Optuna and a bad search space end in one error line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from gdr_cli.app import main
from gdr_cli.config import resolve
from stages.config.train_rec import TrainRecConfig

CONFIG = """
train_rec:
  max_len: 6
  tiger: {d_model: 16, d_kv: 8, d_ff: 32, n_heads: 2, n_layers: 1, n_decoder_layers: 1, beam: 10, use_diffusion: 1}
  train: {batch_size: 64, max_epochs: 1, eval_every: 5, warmup_steps: 2, log_every: 5}
tune:
  startup_trials: 1
  space:
    train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}
    tiger.lambda_mask: {low: 0.0, high: 0.5}
    tiger.diffusion_cross_prob: {type: categorical, choices: [0.0, 0.5]}
"""


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tune")
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
                "synthetic.users=50",
                "--set",
                "synthetic.items=30",
            ]
        )
        == 0
    )
    assert main(["build-ids", "syn", *d, "--method", "random", "--codebook", "4", "--levels", "2", "--ids", "rnd"]) == 0
    (root / "tune.yaml").write_text(CONFIG)
    return root


def tune(root: Path, *extra: str) -> list[str]:
    return [
        "tune",
        "syn",
        "--data-dir",
        str(root),
        "-c",
        str(root / "tune.yaml"),
        "--model",
        "tiger",
        "--ids",
        "rnd",
        *extra,
    ]


def test_two_trials_then_a_second_call_continues(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    optuna = pytest.importorskip("optuna")
    assert main(tune(root, "--n-trials", "2", "--study-name", "s")) == 0, capsys.readouterr().err
    db = root / "syn" / "tune" / "s.db"
    out = root / "syn" / "tune" / "s"
    assert db.is_file() and {"trials.parquet", "best.yaml", "importance.png", "manifest.json"} <= {
        p.name for p in out.iterdir()
    }
    assert pl.read_parquet(out / "trials.parquet")["number"].to_list() == [0, 1]

    assert main(tune(root, "--n-trials", "1", "--study-name", "s")) == 0, capsys.readouterr().err
    trials = pl.read_parquet(out / "trials.parquet")
    assert trials["number"].to_list() == [0, 1, 2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["trials"] == 3 and manifest["stats"]["this_call"] == 1

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    for t in study.trials:
        assert set(t.params) == {"train.lr", "tiger.lambda_mask", "tiger.diffusion_cross_prob"}
        steps = sorted(t.intermediate_values)  # the validation curve, reported at every validation (every 5 steps)
        assert steps and all(s % 5 == 0 for s in steps[:-1])
        if t.state.name == "COMPLETE":  # value = the run's best validation NDCG@10 (never the test split)
            run = root / "syn" / "runs" / t.user_attrs["run"]
            log = pl.read_parquet(run / "train_log.parquet").filter(pl.col("val_ndcg@10").is_not_null())
            assert log["step"].to_list() == steps and log["val_ndcg@10"].to_list() == [
                t.intermediate_values[s] for s in steps
            ]
            stats = json.loads((run / "manifest.json").read_text())["stats"]
            assert t.value == pytest.approx(stats["best_val_ndcg@10"], abs=1e-6)
            assert t.value == pytest.approx(max(t.intermediate_values.values()), abs=1e-6)
    assert len({t.params["train.lr"] for t in study.trials}) == 3  # the continued study draws new points

    best = study.best_trial
    cfg = resolve(TrainRecConfig, section="train_rec", config_file=str(out / "best.yaml"))
    assert cfg.train.lr == pytest.approx(best.params["train.lr"]) and cfg.model == "tiger" and cfg.ids == "rnd"
    assert cfg.tiger.lambda_mask == pytest.approx(best.params["tiger.lambda_mask"]) and cfg.tiger.use_diffusion == 1
    assert set(yaml.safe_load((out / "best.yaml").read_text())) == {"train_rec"}
    args = ["train-rec", "syn", "--data-dir", str(root), "--config", str(out / "best.yaml"), "--run", "again"]
    assert main(args) == 0, capsys.readouterr().err
    again = json.loads((root / "syn" / "runs" / "again" / "manifest.json").read_text())
    assert again["stats"]["best_val_ndcg@10"] == pytest.approx(best.value, abs=1e-6)  # the same run, rebuilt


def test_changed_space_or_bad_key_is_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("optuna")
    capsys.readouterr()
    bad = root / "bad.yaml"
    bad.write_text(CONFIG.split("tune:")[0] + "tune: {space: {}}\n")
    args = [
        "tune",
        "syn",
        "--data-dir",
        str(root),
        "-c",
        str(bad),
        "--model",
        "tiger",
        "--ids",
        "rnd",
        "--n-trials",
        "1",
    ]
    assert main(args) != 0
    assert "tune.space is empty" in error_line(capsys.readouterr().err)
    bad.write_text(CONFIG.replace("tiger.lambda_mask:", "tiger.lambda_max:"))
    assert main(args) != 0
    assert "unknown train_rec key 'tiger.lambda_max'" in error_line(capsys.readouterr().err)
    bad.write_text(CONFIG.replace("choices: [0.0, 0.5]", "choices: [1.5, 0.5]"))  # cross_prob must be <= 1
    assert main(args) != 0
    assert "train_rec.tiger.diffusion_cross_prob an invalid value" in error_line(capsys.readouterr().err)
    assert main([*tune(root, "--n-trials", "1", "--study-name", "s2"), "--model", "pop"]) != 0
    assert "pop has nothing to tune" in error_line(capsys.readouterr().err)
    assert not (root / "syn" / "tune" / "bad").exists()


def test_missing_optuna_says_how_to_install(root: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    capsys.readouterr()
    assert main(tune(root, "--n-trials", "1")) != 0
    line = error_line(capsys.readouterr().err)
    assert "needs Optuna" in line and "pip install 'gdr[tune]'" in line
