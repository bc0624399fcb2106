"""The foundation chain as a user runs it: preprocess -> train-rec pop -> sample -> evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdr_cli.app import main


def gdr(*args: str) -> int:
    return main(list(args))


@pytest.fixture(scope="module")
def ml_root(tmp_path_factory: pytest.TempPathFactory, ml100k_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("ml")
    assert gdr("preprocess", "recbole", "--input", str(ml100k_dir), "--name", "ml", "--data-dir", str(root)) == 0
    assert gdr("train-rec", "ml", "--model", "pop", "--data-dir", str(root)) == 0
    return root


def test_popularity_matches_protocol_numbers(ml_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(ml_root)
    assert gdr("sample", "ml", "--run", "pop", "--split", "test", "--data-dir", d) == 0
    assert gdr("sample", "ml", "--run", "pop", "--exclude-history", "--name", "pop-excl", "--data-dir", d) == 0
    capsys.readouterr()
    assert gdr("evaluate", "ml", "--run", "pop", "--run", "pop-excl", "--json", "--data-dir", d) == 0
    out = json.loads(capsys.readouterr().out)
    # PROTOCOL.md §1: popularity's NDCG@10 on MovieLens 100K is 0.022 keeping history items, 0.045 removing them.
    assert out["pop"]["ndcg@10"] == pytest.approx(0.022, abs=0.0015)
    assert out["pop-excl"]["ndcg@10"] == pytest.approx(0.045, abs=0.0015)
    assert out["pop"]["users"] == 943 and out["pop"]["invalid_rate"] == 0.0
    assert (ml_root / "ml" / "metrics" / "pop" / "test" / "metrics.json").exists()
    assert (ml_root / "ml" / "reports" / "test" / "metrics.png").stat().st_size > 0
    assert (ml_root / "ml" / "reports" / "test" / "manifest.json").exists()


def test_stale_run_is_reported(tmp_path: Path, ml100k_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    assert gdr("preprocess", "recbole", "--input", str(ml100k_dir), "--name", "ml", "--data-dir", d) == 0
    assert gdr("train-rec", "ml", "--model", "pop", "--data-dir", d) == 0
    assert (
        gdr("preprocess", "recbole", "--input", str(ml100k_dir), "--name", "ml", "--min-item", "10", "--data-dir", d)
        == 0
    )
    capsys.readouterr()
    assert gdr("sample", "ml", "--run", "pop", "--data-dir", d) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stale" in err and "gdr train-rec ml --model pop" in err


def test_stage_before_its_input_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gdr("train-rec", "ml", "--model", "pop", "--data-dir", str(tmp_path)) == 2
    assert gdr("sample", "ml", "--run", "pop", "--data-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "gdr preprocess ml" in err and "gdr train-rec ml" in err


def test_interrupted_sample_keeps_previous_recs(
    ml_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(ml_root)
    assert gdr("sample", "ml", "--run", "pop", "--name", "pop-ctrlc", "--data-dir", d) == 0
    folder = ml_root / "ml" / "recs" / "pop-ctrlc" / "test"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    import stages.sample

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(stages.sample, "write_manifest", interrupted)
    assert gdr("sample", "ml", "--run", "pop", "--name", "pop-ctrlc", "--k", "5", "--data-dir", d) == 130
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["test"]
    assert "interrupted" in capsys.readouterr().err


def test_unknown_sampler_for_pop(ml_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gdr("sample", "ml", "--run", "pop", "--sampler", "cpd", "--data-dir", str(ml_root)) == 2
    assert "samplers for this model: topk" in capsys.readouterr().err


def test_every_model_on_the_tiny_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The `make all` chain on synthetic data with configs/tiny.yaml: every stage, every registered model, one table."""
    from stages.models.registry import model_families

    d = ["--data-dir", str(tmp_path), "--config", "tiny"]
    assert gdr("preprocess", "synthetic", "--name", "syn", *d) == 0
    assert gdr("build-ids", "syn", "--method", "rqkmeans", *d) == 0
    assert gdr("train-rec", "syn", "--model", "pop", *d) == 0
    families = model_families()
    for kind, family in families.items():
        ids = ["--ids", "rqkmeans"] if family.needs_ids else []
        if kind == "diffusion":
            assert gdr("diffuse", "syn", *ids, "--run", kind, *d) == 0
        else:
            assert gdr("train-rec", "syn", "--model", kind, *ids, *d) == 0
    for run in ("pop", *families):
        assert gdr("sample", "syn", "--run", run, *d) == 0
    capsys.readouterr()
    assert gdr("evaluate", "syn", "--json", *d) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"pop", *families}
    for name, metrics in out.items():
        assert metrics["invalid_rate"] == 0.0 and metrics["duplicate_rate"] == 0.0
        assert metrics["users"] == out["pop"]["users"] and metrics["recall@20"] > 0, name


def test_two_runs_of_the_tiny_pipeline_print_the_same_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Defaults train for fixed epochs (no wall-clock budget): the same commands give the same numbers."""
    outputs = []
    for attempt in ("a", "b"):
        d = ["--data-dir", str(tmp_path / attempt), "--config", "tiny"]
        assert gdr("preprocess", "synthetic", "--name", "syn", *d) == 0
        assert gdr("build-ids", "syn", "--method", "rqkmeans", *d) == 0
        assert gdr("train-rec", "syn", "--model", "tiger", "--ids", "rqkmeans", "--epochs", "1", *d) == 0
        assert gdr("diffuse", "syn", "--ids", "rqkmeans", "--run", "diffusion", "--epochs", "1", *d) == 0
        for run in ("tiger", "diffusion"):
            assert gdr("sample", "syn", "--run", run, *d) == 0
        capsys.readouterr()
        assert gdr("evaluate", "syn", "--json", *d) == 0
        out = json.loads(capsys.readouterr().out)
        outputs.append(
            {
                run: {k: v for k, v in m.items() if k.split("@")[0] in ("recall", "ndcg", "mrr")}
                for run, m in out.items()
            }
        )
    assert outputs[0] == outputs[1] and len(outputs[0]["tiger"]) == 12
    assert outputs[0]["tiger"]["ndcg@10"] != outputs[0]["diffusion"]["ndcg@10"]  # two real, different models
