"""`gdr diffuse` end to end on a tiny synthetic dataset: run folder, manifest stats (bound), resume,
`gdr sample` with every diffusion sampler, and bad input ending in one error line."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from gdr_cli.app import main
from stages.models.registry import load_model

TINY = ["--set", "d_model=16", "--set", "n_heads=2", "--set", "enc_layers=1", "--set", "dec_layers=1", "--set", "d_ff=32",
        "--set", "max_len=6", "--set", "train.eval_every=20", "--set", "train.log_every=10", "--set", "train.warmup_steps=5",
        "--set", "validation.beam=10"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset 'toy' with a 3-digit random ID set 'rnd'."""
    root = tmp_path_factory.mktemp("diffuse")
    assert main(["preprocess", "synthetic", "--name", "toy", "--data-dir", str(root), "--set", "synthetic.users=80",
                 "--set", "synthetic.items=40", "--set", "synthetic.friends=0"]) == 0  # fmt: skip
    assert main(["build-ids", "toy", "--data-dir", str(root), "--method", "random", "--codebook", "6", "--levels", "2",
                 "--ids", "rnd"]) == 0  # fmt: skip
    return root


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_diffuse_then_sample(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["diffuse", "toy", "--data-dir", str(root), "--ids", "rnd", "--run", "d", "--epochs", "2", "--batch-size", "64",
            "--loss", "t_dce", "--lr", "3e-3", "--seed", "5", *TINY]  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "diffuse: d (diffusion" in err and "t_dce, val bound" in err and "nats/item" in err
    run = root / "toy" / "runs" / "d"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stage"] == "diffuse" and set(manifest["inputs"]) == {"processed", "ids"}
    stats = manifest["stats"]
    assert stats["params"] > 0 and stats["n_digits"] == 3
    log = pl.read_parquet(run / "train_log.parquet").filter(pl.col("val_ndcg@10").is_not_null())
    best = log.sort("val_ndcg@10", descending=True, maintain_order=True).row(
        0, named=True
    )  # first step reaching the max
    assert (
        stats["best_val_ndcg@10"] == pytest.approx(best["val_ndcg@10"], abs=1e-6) and stats["best_step"] == best["step"]
    )
    assert stats["val_perplexity_per_digit"] == pytest.approx(
        2.718281828 ** (stats["val_nll_bound_nats"] / 3), rel=1e-4
    )
    assert {"model.safetensors", "model.json", "train_log.parquet", "curve.png"} <= set(manifest["outputs"])
    model, meta = load_model(run)
    assert model.kind == "diffusion" and meta["max_len"] == 6 and model.init_kwargs["loss"] == "t_dce"
    # the decoding `gdr sample` defaults to: the cheapest choice (the whole code scoring every item, then by a trie
    # beam, then 2 and 1 digits per step) whose validation NDCG@10 is within one paired standard error of the best
    decoding = stats["decoding"]
    scores, gaps = decoding["val_ndcg@10"], decoding["gap_se"]
    labels = ["digits_per_step=3", "digits_per_step=3,whole_code=beam", "digits_per_step=2", "digits_per_step=1"]
    assert list(scores) == labels and decoding["within_se"] == 1
    chosen = f"digits_per_step={meta['digits_per_step']}" + (",whole_code=beam" if "whole_code" in meta else "")
    assert decoding["digits_per_step"] == meta["digits_per_step"] and decoding.get("whole_code") == meta.get(
        "whole_code"
    )
    best = max(scores.values())

    def near(label: str) -> bool:
        return scores[label] >= best - gaps[label] - 1e-6

    assert near(chosen) and not any(near(label) for label in labels[: labels.index(chosen)])
    capsys.readouterr()
    for flag, used in (([], chosen), (["--digits-per-step", "1"], labels[3]), (["--whole-code", "beam"], labels[1])):
        assert (
            main(["sample", "toy", "--data-dir", str(root), "--run", "d", "--split", "valid", "--name", "dv", *flag])
            == 0
        )
        recs = json.loads((root / "toy" / "recs" / "dv" / "valid" / "manifest.json").read_text())
        digits = int(used.split(",")[0].removeprefix("digits_per_step="))
        assert recs["stats"]["digits_per_step"] == digits and recs["config"]["whole_code"] == (
            "beam" if "beam" in used else "exact"
        )
        assert f"{digits} digit(s)/step" in capsys.readouterr().err
        assert main(["evaluate", "toy", "--data-dir", str(root), "--run", "dv", "--split", "valid"]) == 0
        metrics = json.loads((root / "toy" / "metrics" / "dv" / "valid" / "metrics.json").read_text())
        assert metrics["ndcg@10"] == pytest.approx(scores[used], abs=1e-5)
    capsys.readouterr()
    assert main(["sample", "toy", "--data-dir", str(root), "--run", "d", "--whole-code", "beam", "--digits-per-step",
                 "2"]) == 2  # fmt: skip
    assert "--whole-code beam searches the whole code of 3 digits in one step" in error_line(capsys.readouterr().err)

    # resuming the finished run rebuilds the same weights
    first = (run / "model.safetensors").read_bytes()
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == first

    for sampler in ("cpd", "tweedie", "euler", "ordered"):
        assert main(["sample", "toy", "--data-dir", str(root), "--run", "d", "--sampler", sampler, "--split", "valid",
                     "--set", "k=5", "--set", "beam=5"]) == 0, capsys.readouterr().err  # fmt: skip
        name = "d" if sampler == "cpd" else f"d-{sampler}"
        recs = pl.read_parquet(root / "toy" / "recs" / name / "valid" / "recs.parquet")
        per_user = recs.group_by("user").agg(pl.col("item").n_unique(), pl.len())
        assert recs["item"].null_count() == 0 and (per_user["item"] == per_user["len"]).all()
        if sampler in ("cpd", "ordered"):  # deterministic beams always fill k distinct items
            assert per_user["item"].min() == 5


def test_bad_inputs_are_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    base = ["diffuse", "toy", "--data-dir", str(root)]
    assert main([*base, "--ids", "rnd", "--loss", "mse"]) == 2
    assert "loss" in error_line(capsys.readouterr().err)
    assert main([*base, "--ids", "nope"]) == 2
    assert "ID set 'nope'" in error_line(capsys.readouterr().err)
    assert main([*base, "--ids", "rnd", "--set", "validation.digits_per_step=4"]) == 2
    assert "exceeds the code length 3" in error_line(capsys.readouterr().err)
    assert main([*base, "--ids", "rnd", "--set", "n_heads=3", "--set", "d_model=16"]) == 2
    assert "does not divide" in error_line(capsys.readouterr().err)
    assert main([*base, "--ids", "rnd", "--set", "bogus=1"]) == 2
    assert "unknown config key 'bogus'" in error_line(capsys.readouterr().err)
    assert not (root / "toy" / "runs" / "diffusion").exists()


def test_without_a_step_choice_sample_fills_one_digit_per_step(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diffuse", "toy", "--data-dir", str(root), "--ids", "rnd", "--run", "fixed", "--epochs", "1",
                 "--set", "validation.choose_digits_per_step=false", *TINY]) == 0, capsys.readouterr().err  # fmt: skip
    run = root / "toy" / "runs" / "fixed"
    assert "decoding" not in json.loads((run / "manifest.json").read_text())["stats"]
    assert "digits_per_step" not in load_model(run)[1]
    assert main(["sample", "toy", "--data-dir", str(root), "--run", "fixed", "--split", "valid", "-k", "5"]) == 0
    stats = json.loads((root / "toy" / "recs" / "fixed" / "valid" / "manifest.json").read_text())["stats"]
    assert stats["digits_per_step"] == 1 and stats["nfe_per_user"] > 1


def test_step_choices_are_ordered_by_estimated_cost() -> None:
    import torch

    from stages.config.diffuse import DiffuseConfig
    from stages.models.diffusion import DiffusionFamily, decoding_cost, first_candidates
    from stages.models.family import FamilyData

    def codes(n_items: int, levels: tuple[int, ...] = (100, 100, 100)) -> torch.Tensor:
        """Random distinct codes: len(levels) digits plus a collision digit numbering equal prefixes."""
        head = torch.stack([torch.randint(0, v, (n_items,), generator=torch.Generator().manual_seed(j))
                            for j, v in enumerate(levels)], 1)  # fmt: skip
        _, inverse = torch.unique(head, dim=0, return_inverse=True)
        order = inverse.argsort(stable=True)
        last = torch.empty_like(inverse)
        last[order] = torch.arange(n_items) - torch.searchsorted(inverse[order], inverse[order])
        return torch.cat([head, last[:, None]], 1)

    def order(table: torch.Tensor) -> list[str]:
        data = FamilyData(splits=pl.DataFrame(), n_items=len(table), max_len=20, seed=0, codes=table,
                          vocab_sizes=[int(v) + 1 for v in table.max(0).values])  # fmt: skip
        choices = DiffusionFamily().decoding_choices(DiffuseConfig(), data)
        assert all(o.whole_code == e.get("whole_code", "exact") for e, _, o in choices)  # the label is the search run
        return [f"{e['digits_per_step']}{e.get('whole_code', '')}" for e, _, _ in choices]

    # by hand: 4 items, codes (0,0) (0,1) (1,0) (2,1)
    tiny = torch.tensor([[0, 0], [0, 1], [1, 0], [2, 1]])
    assert first_candidates(tiny, 2) == 4 and first_candidates(tiny, 1) == 3 + 2
    assert first_candidates(tiny, 2, beam=20) == 20 * (3 + 2)
    assert decoding_cost(4, 1, 20, 400, 2000) == 61.2 and decoding_cost(4, 2, 20, 2000, 2000) == 22
    assert decoding_cost(4, 4, 20, 10**6, 2000) == 501  # one call + a million items scored
    assert order(codes(1349, (37, 37, 37))) == ["4", "4beam", "2", "3", "1"]  # 1,349 items < the beam's 20 x 115 digits
    assert order(codes(20_000, (27, 27, 27))) == ["4beam", "4", "2", "3", "1"]  # 1 + 20 x 87 / 2000 < 1 + 20,000 / 2000
    # a big catalogue: the beam's cost does not grow; 3 digits per step score ~every item 4 times at the first step
    # (4 triples of positions, each nearly unique), the whole code once, 2 per step ~31k digit pairs
    assert order(codes(300_000)) == ["4beam", "2", "1", "4", "3"]


def test_validation_on_a_seeded_subset_of_users(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stages.data.sequences import validation_rows

    rows = validation_rows(100, 10, seed=42)
    assert rows is not None and len(rows) == 10 and bool((rows[1:] > rows[:-1]).all()) and rows.max() < 100
    assert validation_rows(100, 10, seed=42).tolist() == rows.tolist() != validation_rows(100, 10, seed=3).tolist()
    assert validation_rows(100, 0, seed=42) is None and validation_rows(100, 100, seed=42) is None
    stats = {}
    for keep in (0, 7):
        assert main(["diffuse", "toy", "--data-dir", str(root), "--ids", "rnd", "--run", f"v{keep}", "--epochs", "1",
                     "--set", f"train.val_users={keep}", *TINY]) == 0, capsys.readouterr().err  # fmt: skip
        stats[keep] = json.loads((root / "toy" / "runs" / f"v{keep}" / "manifest.json").read_text())["stats"]
    users = json.loads((root / "toy" / "runs" / "v0" / "manifest.json").read_text())["stats"]["val_users"]
    assert users > 7 and stats[7]["val_users"] == 7
    assert stats[7]["val_nll_bound_nats"] != stats[0]["val_nll_bound_nats"]  # the bound reads the same subset
