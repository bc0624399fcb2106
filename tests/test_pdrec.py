"""PDRec plug-in for SASRec: history weights on a hand-computed case, window columns aligned with the windows,
the weighted loss, tail negatives, bad plug-in runs (other dataset / ID space / model) and the CLI end to end."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from gdr_cli.app import main
from gdr_cli.config import resolve
from gdr_cli.errors import GdrError
from stages.config.pdrec import PdrecConfig
from stages.config.train_rec import TrainRecConfig
from stages.data.sequences import training_windows
from stages.models.pdrec import PdrecSignals, history_weights, pdrec_windows
from stages.models.sasrec import Sasrec
from stages.models.seqrec import softmax_loss, tail_draws


def splits_of(train: list[list[int]]) -> pl.DataFrame:
    n = len(train)
    return pl.DataFrame(
        {"user": list(range(n)), "train": train, "valid": [0] * n, "test": [0] * n},
        schema={"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    )


def test_history_weights_by_hand() -> None:
    # user 0: times 0, 5, 10 -> tau = 0.1, 0.55, 1.0; scores 0, ln 2, 0 -> pi = 1/4, 1/2, 1/4
    # tau * pi = 0.025, 0.275, 0.25 (mean 0.55 / 3) -> omega = 0.13636.., 1.5, 1.36363..
    # user 1: equal times and scores -> every weight 1
    scores = np.array([0.0, math.log(2), 0.0, 3.0, 3.0])
    times = np.array([0, 5, 10, 7, 7])
    lengths = np.array([3, 2])
    omega = [0.025 / (0.55 / 3), 0.275 / (0.55 / 3), 0.25 / (0.55 / 3), 1.0, 1.0]
    w = history_weights(scores, times, lengths, strength=1.0, temperature=1.0, time_min=0.1)
    assert w == pytest.approx(omega, rel=1e-9)
    half = history_weights(scores, times, lengths, strength=0.5, temperature=1.0, time_min=0.1)
    assert half == pytest.approx([1 + 0.5 * (o - 1) for o in omega], rel=1e-9)
    assert history_weights(scores, times, lengths, strength=0.0, temperature=1.0, time_min=0.1) == pytest.approx(
        [1.0] * 5
    )
    # temperature 2 halves the scores: pi = softmax(0, ln 2 / 2, 0)
    e = [1.0, math.sqrt(2), 1.0]
    pi = [x / sum(e) for x in e]
    raw = [t * p for t, p in zip([0.1, 0.55, 1.0], pi, strict=True)]
    hot = history_weights(scores, times, lengths, strength=1.0, temperature=2.0, time_min=0.1)
    assert hot[:3] == pytest.approx([r / (sum(raw) / 3) for r in raw], rel=1e-9)


def signals(n_users: int, n_items: int, positives: list[list[int]]) -> PdrecSignals:
    return PdrecSignals(
        user_vec=torch.arange(n_users, dtype=torch.float32)[:, None].expand(n_users, 2).contiguous(),
        items=torch.eye(n_items, 2),
        position_score=np.zeros(0),
        threshold=torch.arange(n_users, dtype=torch.float32) + 0.5,
        positives=torch.tensor(positives),
    )


def test_windows_carry_each_targets_weight_and_the_users_signals() -> None:
    s = splits_of([[1, 2, 3, 4, 5], [6, 7]])
    weights = np.array([10.0, 11.0, 12.0, 13.0, 14.0, 20.0, 21.0])  # flat, one per training position
    sig = signals(2, 9, [[8, 0], [8, 1]])
    cfg = PdrecConfig(run="x", soft_positives=False)
    out = pdrec_windows(s, sig, weights, cfg, max_len=3, stride=3)
    assert torch.equal(out["seq"], training_windows(s, 3, 3))  # the plain SASRec windows
    # windows of user 0: [-1, 1, 2, 3]? no: cut from the end: [2, 3, 4, 5] and [-1, -1, 1, 2]
    assert out["seq"].tolist() == [[-1, -1, 1, 2], [2, 3, 4, 5], [-1, -1, 6, 7]]
    assert out["weight"].tolist() == [[0.0, 10.0, 11.0], [12.0, 13.0, 14.0], [0.0, 20.0, 21.0]]
    assert out["tail_pref"][:, 0].tolist() == [0.0, 0.0, 1.0] and out["tail_thr"].tolist() == [0.5, 0.5, 1.5]
    assert "extra" not in out

    cfg = PdrecConfig(run="x", reweight=False, tail_negatives=False)
    out = pdrec_windows(s, sig, None, cfg, max_len=3, stride=3)
    # the top positive is appended (weight 0: the extra loss scores it), the last window's last query sees item 5
    assert out["seq"].tolist() == [[-1, 1, 2, 3], [3, 4, 5, 8], [-1, 6, 7, 8]]
    assert out["weight"].tolist() == [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    assert out["extra"].tolist() == [[-1, -1], [8, 0], [8, 1]]
    assert "tail_pref" not in out


def test_plugin_loss_is_the_weighted_mean_of_position_losses() -> None:
    torch.manual_seed(0)
    model = Sasrec(n_items=7, max_len=4, d_model=8, n_layers=1, n_heads=2, d_ff=16, dropout=0.0, seed=1)
    seq = torch.tensor([[-1, 1, 2, 3, 4], [0, 5, 6, 1, 2]])
    plain = model.loss({"seq": seq})
    ones = torch.ones(2, 4)
    assert model.loss({"seq": seq, "weight": ones}).item() == pytest.approx(plain.item(), rel=1e-5)
    # one position weighted only: the loss is that position's cross-entropy
    q = model.queries(seq[:, :-1])
    only = torch.zeros(2, 4)
    only[1, 2] = 3.0
    ce = softmax_loss(q[1, 2][None], seq[1, 3][None], model.item_vectors(), model.temperature)
    assert model.loss({"seq": seq, "weight": only}).item() == pytest.approx(ce.item(), rel=1e-5)
    # soft positives add beta x their mean cross-entropy at the window's last query
    model.plugin_beta = 0.5
    extra = torch.tensor([[3, -1], [-1, -1]])
    ce_extra = softmax_loss(q[0, -1][None], torch.tensor([3]), model.item_vectors(), model.temperature)
    got = model.loss({"seq": seq, "weight": ones, "extra": extra}).item()
    assert got == pytest.approx(plain.item() + 0.5 * ce_extra.item(), rel=1e-5)


def test_tail_draws_come_from_the_tail_only() -> None:
    gen = torch.Generator().manual_seed(0)
    pref = torch.arange(20, dtype=torch.float32).repeat(3, 1)  # item i scores i
    thr = torch.tensor([4.0, 9.0, 19.0])
    for _ in range(20):
        neg = tail_draws(pref, thr, 5, gen)
        assert (pref.gather(1, neg) <= thr[:, None]).all()
        assert all(len(set(row)) == 5 for row in neg.tolist())
    seen = torch.zeros(20, dtype=torch.int64)
    for _ in range(200):
        seen += torch.bincount(tail_draws(pref, thr, 5, gen)[2], minlength=20)
    assert (seen > 0).all()  # the whole catalogue is the last row's tail: every item gets drawn


def test_config_errors() -> None:
    with pytest.raises(GdrError, match="loss to 'negatives'"):
        resolve(TrainRecConfig, section="train_rec", flags={"model": "sasrec", "sasrec.plugin": "pdrec"})
    with pytest.raises(GdrError, match="trains sasrec, not 'hstu'"):
        resolve(TrainRecConfig, section="train_rec",
                flags={"model": "hstu", "sasrec.plugin": "pdrec", "sasrec.pdrec.tail_negatives": False})  # fmt: skip
    with pytest.raises(GdrError, match="every switch off"):
        resolve(TrainRecConfig, section="train_rec", sets=["sasrec.pdrec.reweight=false", "sasrec.pdrec.soft_positives=false",
                                                           "sasrec.pdrec.tail_negatives=false"])  # fmt: skip


# ----- through the CLI ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic datasets (a, b) and a tiny DiffuRec run on each."""
    root = tmp_path_factory.mktemp("pdrec")
    d = ["--data-dir", str(root), "-c", "tiny"]
    for name, seed in (("a", 1), ("b", 2)):
        assert main(["preprocess", "synthetic", *d, "--name", name, "--seed", str(seed)]) == 0
        assert main(["train-rec", name, *d, "--model", "diffurec", "--run", "dr", "--epochs", "1"]) == 0
    return root


PD = ["--model", "sasrec", "--plugin", "pdrec", "--set", "sasrec.loss=negatives", "--set", "sasrec.num_negatives=16"]


def test_cli_pdrec_trains_samples_and_evaluates(root: Path) -> None:
    d = ["--data-dir", str(root), "-c", "tiny"]
    runs = {"pd-all": [], "pd-reweight": ["--no-soft-positives", "--no-tail-negatives"]}
    for run, switches in runs.items():
        assert main(["train-rec", "a", *d, *PD, "--plugin-run", "dr", *switches, "--run", run]) == 0
        manifest = (root / "a" / "runs" / run / "manifest.json").read_text()
        assert '"plugin"' in manifest and "a/runs/dr" in manifest
        assert main(["sample", "a", *d, "--run", run]) == 0
    cfg = (root / "a" / "runs" / "pd-reweight" / "manifest.json").read_text()
    assert '"soft_positives": false' in cfg and '"reweight": true' in cfg
    assert main(["evaluate", "a", *d, "--report"]) == 0
    table = pl.read_parquet(root / "a" / "reports" / "test" / "comparison.parquet")
    assert set(runs) <= set(table["run"].to_list())


def test_plugin_run_of_another_dataset_or_id_space_is_refused(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(root), "-c", "tiny"]
    other = str(root / "b" / "runs" / "dr")  # a path to dataset b's run
    assert main(["train-rec", "a", *d, *PD, "--plugin-run", other, "--run", "bad"]) == 2
    assert "belongs to dataset 'b', not 'a'" in capsys.readouterr().err
    shutil.copytree(root / "b" / "runs" / "dr", root / "a" / "runs" / "copied")  # b's run under a's runs/
    assert main(["train-rec", "a", *d, *PD, "--plugin-run", "copied", "--run", "bad"]) == 2
    assert "belongs to dataset 'b'" in capsys.readouterr().err
    assert main(["train-rec", "a", *d, "--model", "pop", "--run", "popa"]) == 0
    assert main(["train-rec", "a", *d, *PD, "--plugin-run", "popa", "--run", "bad"]) == 2
    assert "needs a diffurec run" in capsys.readouterr().err
    # same name, other ID space: dataset b re-preprocessed with another seed after its DiffuRec run
    assert main(["preprocess", "synthetic", *d, "--name", "b", "--seed", "3"]) == 0
    assert main(["train-rec", "b", *d, *PD, "--plugin-run", "dr", "--run", "bad"]) == 2
    assert "another ID space" in capsys.readouterr().err
    assert not (root / "a" / "runs" / "bad").exists() and not (root / "b" / "runs" / "bad").exists()
