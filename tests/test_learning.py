"""The generative models learn: on synthetic data with planted sequential structure they reach at
least twice popularity's validation NDCG@10, and an interrupted run resumed with `--resume` ends
bit-identical to an uninterrupted one (weights, selected step, metrics)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from gdr_cli.app import main
from gdr_cli.paths import DataPaths
from stages.data.sequences import eval_histories
from stages.inputs import open_processed
from stages.models.registry import load_model
from stages.training.validation import make_validator

LEARNABLE = ["--set", "synthetic.users=300", "--set", "synthetic.items=120", "--set", "synthetic.clusters=12",
             "--set", "synthetic.stay=0.9", "--set", "synthetic.popularity=0.8", "--set", "synthetic.friends=0"]  # fmt: skip
"""Users walk 12 topics and stay in the current one 90% of the time: the last items predict the next
one far better than overall popularity does (and popularity is flat enough not to be the answer)."""

TIGER = ["--model", "tiger", "--ids", "rq", "--set", "max_len=8", "--set", "tiger.d_model=32", "--set", "tiger.d_kv=8",
         "--set", "tiger.n_heads=2", "--set", "tiger.d_ff=64", "--set", "tiger.n_layers=1", "--set", "tiger.n_decoder_layers=1",
         "--set", "tiger.beam=10", "--set", "train.batch_size=64", "--set", "train.lr=3e-3", "--set", "train.warmup_steps=10",
         "--set", "train.eval_every=40", "--set", "train.checkpoint_every=20", "--set", "train.log_every=10", "--epochs", "4"]  # fmt: skip
DIFFUSION = ["--ids", "rq", "--set", "max_len=8", "--set", "d_model=32", "--set", "n_heads=2", "--set", "d_ff=64",
             "--set", "enc_layers=1", "--set", "dec_layers=1", "--set", "dropout=0", "--set", "train.batch_size=64",
             "--set", "train.lr=3e-3", "--set", "train.warmup_steps=10", "--set", "train.eval_every=40",
             "--set", "train.checkpoint_every=20", "--set", "train.log_every=10", "--epochs", "5"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("learning")
    d = ["--data-dir", str(root)]
    assert main(["preprocess", "synthetic", "--name", "syn", *LEARNABLE, *d]) == 0
    assert (
        main(["build-ids", "syn", "--method", "rqkmeans", "--levels", "2", "--codebook", "8", "--ids", "rq", *d]) == 0
    )
    assert main(["train-rec", "syn", "--model", "pop", *d]) == 0
    return root


def val_ndcg(root: Path, run: str, options: object = None) -> float:
    """Validation NDCG@10 of a trained run, computed here (not read from its manifest) with sample `options`."""
    paths = DataPaths(root, "syn")
    model, meta = load_model(paths.run(run))
    val = eval_histories(open_processed(paths).table("splits"), "valid", int(meta["max_len"]), with_target=True)
    total, users = make_validator(val["history"], val["target"], k=10, batch_size=512, options=options)(model, 0, 1)
    return total / users


def stage_args(stage: str, root: Path, run: str, extra: list[str]) -> list[str]:
    return [stage, "syn", "--data-dir", str(root), "--run", run, *extra]


@pytest.mark.parametrize(("stage", "extra"),
                         [("train-rec", TIGER), ("train-rec", [*TIGER, "--set", "tiger.dense_weight=1"]),
                          ("train-rec", [*TIGER, "--set", "tiger.repeat_head=true"]), ("diffuse", DIFFUSION),
                          ("diffuse", [*DIFFUSION, "--set", "repeat_head=true"])],
                         ids=["tiger", "tiger-dense", "tiger-repeat", "diffusion", "diffusion-repeat"])  # fmt: skip
def test_generative_models_double_popularity(
    root: Path, stage: str, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    pop = val_ndcg(root, "pop")
    assert main(stage_args(stage, root, "learn", extra)) == 0, capsys.readouterr().err
    manifest = json.loads((root / "syn" / "runs" / "learn" / "manifest.json").read_text())
    got = val_ndcg(root, "learn", SimpleNamespace(beam=10) if stage == "train-rec" else None)  # tiger.beam=10 above
    assert got == pytest.approx(
        manifest["stats"]["best_val_ndcg@10"], abs=1e-5
    )  # the saved weights are the selected ones
    assert got >= 2 * pop, f"{stage}: validation NDCG@10 {got:.4f} < 2 x popularity {pop:.4f}"


def interrupt_at(cls: type, at: int):
    """A `loss` for `cls` whose `at`-th call sends SIGINT (the loop stops after that step)."""
    original, calls = cls.loss, [0]

    def loss(model, batch):
        calls[0] += 1
        if calls[0] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return original(model, batch)

    return loss


@pytest.mark.parametrize(("stage", "extra", "cls_path"),
                         [("train-rec", TIGER, "stages.models.tiger.Tiger"), ("diffuse", DIFFUSION, "stages.models.diffusion.DiffusionRecommender")],
                         ids=["tiger", "diffusion"])  # fmt: skip
def test_mid_run_interruption_resumes_bit_identical(
    root: Path,
    stage: str,
    extra: list[str],
    cls_path: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import importlib

    args = [*extra, "--epochs", "2"]
    whole, cut = f"whole-{stage}", f"cut-{stage}"
    assert main(stage_args(stage, root, whole, args)) == 0, capsys.readouterr().err

    module, name = cls_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    monkeypatch.setattr(cls, "loss", interrupt_at(cls, at=57))  # mid-epoch, between checkpoints (every 20)
    assert main(stage_args(stage, root, cut, args)) == 130
    monkeypatch.undo()
    work = DataPaths(root, "syn").work(cut)
    assert torch.load(work / "checkpoint.pt", weights_only=True)["step"] == 57
    assert not (root / "syn" / "runs" / cut / "manifest.json").exists()
    assert main([*stage_args(stage, root, cut, args), "--resume"]) == 0, capsys.readouterr().err

    runs = root / "syn" / "runs"
    a, b = load_file(str(runs / whole / "model.safetensors")), load_file(str(runs / cut / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = json.loads((runs / whole / "manifest.json").read_text())["stats"]
    sb = json.loads((runs / cut / "manifest.json").read_text())["stats"]
    for key in ("best_val_ndcg@10", "best_step", "steps", "stop_reason"):
        assert sa[key] == sb[key], key
