"""`gdr sample` options through the CLI: an option the model's sampler does not read is a one-line
error naming the ones it does; stochastic lists do not depend on --batch-size; exactly k items
with and without --exclude-history."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from gdr_cli.app import main
from gdr_cli.errors import GdrError
from stages.config.sample import SampleConfig, check_applicable
from stages.models.registry import load_model

DIFF = ["--set", "d_model=16", "--set", "n_heads=2", "--set", "enc_layers=1", "--set", "dec_layers=1", "--set", "d_ff=32",
        "--set", "max_len=6", "--set", "train.eval_every=50", "--set", "train.warmup_steps=2", "--set", "validation.beam=5"]  # fmt: skip
TIGER = ["--set", "tiger.d_model=16", "--set", "tiger.d_kv=8", "--set", "tiger.n_heads=2", "--set", "tiger.d_ff=32",
         "--set", "tiger.n_layers=1", "--set", "tiger.n_decoder_layers=1", "--set", "max_len=6", "--set", "train.eval_every=50"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic 'toy' (40 items) with a random 3-digit ID set and pop, tiger and diffusion runs."""
    root = tmp_path_factory.mktemp("sample_options")
    d = ["--data-dir", str(root)]
    assert main(["preprocess", "synthetic", "--name", "toy", *d, "--set", "synthetic.users=50", "--set", "synthetic.items=40",
                 "--set", "synthetic.friends=0"]) == 0  # fmt: skip
    assert main(["build-ids", "toy", *d, "--method", "random", "--codebook", "6", "--levels", "2", "--ids", "rnd"]) == 0
    assert main(["train-rec", "toy", *d, "--model", "pop"]) == 0
    assert main(["train-rec", "toy", *d, "--model", "tiger", "--ids", "rnd", "--run", "t", "--epochs", "1", "--batch-size", "64",
                 *TIGER]) == 0  # fmt: skip
    assert main(["diffuse", "toy", *d, "--ids", "rnd", "--run", "d", "--epochs", "1", "--batch-size", "64", *DIFF, "--loss", "t_dse",
                 "--set", "label_smoothing=0.1", "--set", "schedule=linear_beta", "--set", "beta_max=0.2"]) == 0  # fmt: skip
    return root


def test_objective_fields_reach_the_trained_model(root: Path) -> None:
    model, _ = load_model(root / "toy" / "runs" / "d")
    kw = model.init_kwargs
    assert (kw["loss"], kw["label_smoothing"], kw["schedule"], kw["beta_max"]) == ("t_dse", 0.1, "linear_beta", 0.2)
    assert model.objective.label_smoothing == 0.1
    assert float(model.objective.schedule.alpha_bar[-1] / model.objective.schedule.alpha_bar[-2]) == pytest.approx(0.8)


def error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def sample(root: Path, run: str, *args: str) -> int:
    return main(["sample", "toy", "--data-dir", str(root), "--run", run, "--split", "valid", *args])


@pytest.mark.parametrize(
    "run,args,message,fix",
    [
        (
            "t",
            ["--digits-per-step", "2"],
            "--digits-per-step does not apply to sampler 'beam' of model 'tiger'",
            "options of beam: --beam",
        ),
        (
            "t",
            ["--set", "prefix={0: 1}", "--strategy", "top_k"],
            "--strategy, --prefix do not apply to sampler 'beam'",
            "--beam",
        ),
        (
            "pop",
            ["--beam", "30"],
            "--beam does not apply to sampler 'topk' of model 'pop'",
            "none beyond the common ones",
        ),
        (
            "d",
            ["--strategy", "top_k"],
            "--strategy does not apply to sampler 'cpd'",
            "--first-beam, --digits-per-step, --whole-code, --renormalize",
        ),
        (
            "d",
            ["--sampler", "tweedie", "--digits-per-step", "2"],
            "--digits-per-step does not apply to sampler 'tweedie'",
            "--steps, --strategy",
        ),
        (
            "d",
            ["--sampler", "ordered", "--first-beam", "4"],
            "--first-beam does not apply to sampler 'ordered'",
            "--order",
        ),
        ("d", ["--sampler", "cpd", "--steps", "4"], "--steps does not apply to sampler 'cpd'", "--digits-per-step"),
        ("t", ["--whole-code", "beam"], "--whole-code does not apply to sampler 'beam' of model 'tiger'", "--beam"),
        (
            "d",
            ["--sampler", "tweedie", "--whole-code", "exact"],
            "--whole-code does not apply to sampler 'tweedie'",
            "--steps",
        ),
        (
            "d",
            ["--sampler", "tweedie", "--top-k", "3"],
            "--top-k applies only with --strategy top_k",
            "add --strategy top_k",
        ),
        (
            "d",
            ["--sampler", "ordered-beam", "--order", "random"],
            "a random digit order needs the stochastic sampler",
            "--sampler ordered",
        ),
        ("d", ["--sampler", "ordered", "--order", "2,x"], "bad --order '2,x'", "'random'"),
        ("t", ["--device", "tpu"], "bad value for config key 'device'", "fix the value"),
        pytest.param(
            "t",
            ["--device", "cuda"],
            "sample.device=cuda but no CUDA device is available",
            "sample.device=auto or cpu",
            marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA"),
        ),
    ],
)
def test_options_that_do_not_apply_are_one_line_errors(root: Path, capsys: pytest.CaptureFixture[str], run: str, args: list[str],
                                                       message: str, fix: str) -> None:  # fmt: skip
    capsys.readouterr()
    assert sample(root, run, *args) == 2
    line = error_line(capsys.readouterr().err)
    assert message in line and fix in line, line


def test_options_that_apply_and_config_file_keys_pass(
    root: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # a config file's sample section is shared by every model: its keys are not checked
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sample:\n  k: 5\n  beam: 7\n  digits_per_step: 2\n  strategy: top_k\n")
    assert sample(root, "pop", "-c", str(cfg)) == 0, capsys.readouterr().err
    assert sample(root, "t", "-c", str(cfg), "--beam", "6") == 0, capsys.readouterr().err
    assert sample(root, "d", "--sampler", "ordered", "--strategy", "top_k", "--top-k", "2", "--order", "random", "-k", "5",
                  "--temperature", "0.8", "--beam", "5") == 0, capsys.readouterr().err  # fmt: skip
    assert (
        sample(root, "d", "--first-beam", "3", "--beam", "6", "--raw-scores", "--digits-per-step", "2", "-k", "5") == 0
    )
    # programmatic configs: the fields set on the config are the given ones
    with pytest.raises(GdrError, match="--steps does not apply"):
        check_applicable(SampleConfig(steps=3), SampleConfig(steps=3).model_fields_set, "cpd", "diffusion")


def read(root: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(root / "toy" / "recs" / name / "valid" / "recs.parquet").sort("user", "rank")


@pytest.mark.parametrize("sampler", ["tweedie", "ordered"])
def test_stochastic_lists_do_not_depend_on_the_batch_size(
    root: Path, capsys: pytest.CaptureFixture[str], sampler: str
) -> None:
    frames = []
    for size in (1, 7, 64):
        name = f"bs-{sampler}-{size}"
        assert sample(root, "d", "--sampler", sampler, "-k", "5", "--beam", "5", "--batch-size", str(size), "--seed", "9",
                      "--name", name, "--exclude-history") == 0, capsys.readouterr().err  # fmt: skip
        frames.append(read(root, name))
    assert frames[0].height == 50 * 5
    for frame in frames[1:]:
        assert frame.select("user", "rank", "item").equals(frames[0].select("user", "rank", "item"))


@pytest.mark.parametrize("sampler", ["cpd", "tweedie", "euler", "ordered", "ordered-beam"])
def test_exactly_k_items_with_and_without_history(root: Path, capsys: pytest.CaptureFixture[str], sampler: str) -> None:
    splits = pl.read_parquet(root / "toy" / "processed" / "splits.parquet")
    history = {u: set(t) for u, t in zip(splits["user"].to_list(), splits["train"].to_list(), strict=True)}
    n_items = load_model(root / "toy" / "runs" / "d")[0].codes.shape[0]
    for flag in ("--keep-history", "--exclude-history"):
        name = f"k-{sampler}{flag}"
        assert sample(root, "d", "--sampler", sampler, "-k", "20", "--beam", "20", flag, "--name", name) == 0, (
            capsys.readouterr().err
        )
        recs = read(root, name)
        manifest = json.loads((root / "toy" / "recs" / name / "valid" / "manifest.json").read_text())
        assert 1 <= manifest["stats"]["max_rounds"] <= 20
        per_user = recs.group_by("user").agg(pl.col("item").n_unique().alias("distinct"), pl.len()).sort("user")
        left = [
            min(20, n_items - (len(history[u]) if flag == "--exclude-history" else 0))
            for u in per_user["user"].to_list()
        ]
        assert per_user.height == 50 and per_user["distinct"].to_list() == left and per_user["len"].to_list() == left
        assert flag == "--keep-history" or min(left) < 20  # some users' history leaves fewer than k items
        if flag == "--exclude-history":
            assert not any(
                item in history[user] for user, item in zip(recs["user"].to_list(), recs["item"].to_list(), strict=True)
            )


def test_unconstrained_tiger_writes_invalid_codes_that_evaluate_counts(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--no-constraint: codes that name no item are null rows in recs.parquet and evaluate's invalid_rate counts them;
    the constrained search of the same run has none, and its lists are the valid items of the free search in order."""
    assert sample(root, "t", "--no-constraint", "--name", "t-free") == 0
    assert sample(root, "t") == 0
    folder = root / "toy" / "recs"
    free = pl.read_parquet(folder / "t-free" / "valid" / "recs.parquet")
    kept = pl.read_parquet(folder / "t" / "valid" / "recs.parquet")
    n_null = free["item"].null_count()
    assert n_null > 0 and kept["item"].null_count() == 0
    assert free.group_by("user").len()["len"].max() == 20  # every slot written, valid or not
    valid_free = free.drop_nulls("item").sort(["user", "rank"])
    top = kept.sort(["user", "rank"]).group_by("user", maintain_order=True).head(20)
    first = top.join(valid_free.select("user", "item"), on=["user", "item"], how="semi")
    assert first.height == valid_free.height  # every valid code of the free search is also a constrained result
    capsys.readouterr()
    assert (
        main(
            ["evaluate", "toy", "--data-dir", str(root), "--split", "valid", "--json", "--run", "t-free", "--run", "t"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["t-free"]["invalid_rate"] == pytest.approx(n_null / free.height) and out["t"]["invalid_rate"] == 0.0


@pytest.mark.parametrize("sampler", ["cpd", "ordered-beam", "tweedie", "ordered"])
def test_unconstrained_diffusion_samplers_write_invalid_codes(
    root: Path, capsys: pytest.CaptureFixture[str], sampler: str
) -> None:
    """--no-constraint for the diffusion samplers: codes of no item are null rows, evaluate counts them; the
    constrained lists of the same run have none."""
    name = f"free-{sampler}"
    assert (
        sample(root, "d", "--sampler", sampler, "--no-constraint", "-k", "10", "--beam", "10", "--name", name) == 0
    ), capsys.readouterr().err
    free = pl.read_parquet(root / "toy" / "recs" / name / "valid" / "recs.parquet")
    assert free["item"].null_count() > 0
    valid = free.drop_nulls("item")
    assert valid.group_by("user").agg(pl.col("item").n_unique() == pl.len())["item"].all()  # distinct items
    capsys.readouterr()
    assert main(["evaluate", "toy", "--data-dir", str(root), "--split", "valid", "--json", "--run", name]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[name]["invalid_rate"] == pytest.approx(free["item"].null_count() / free.height)


def test_free_beam_step_is_the_brute_force_top() -> None:
    from stages.samplers.base import State
    from stages.samplers.free import INVALID, free_extend, free_finish
    from stages.samplers.validity import CodeTable, subsets

    codes = torch.tensor([[0, 1], [2, 3], [1, 0]])  # 3 items; vocab sizes 3 and 4: position 0 has no digit 3
    table = CodeTable(codes, [3, 4])
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(2, 1, 2, 4, generator=gen).log_softmax(-1)  # [B, S, n, V]
    start = State(tokens=torch.full((2, 1, 2), -1), score=torch.zeros(2, 1))
    both = free_extend(table, start, logp, subsets(2, 2), width=5)  # both digits in one step
    for u in range(2):
        brute = sorted(((float(logp[u, 0, 0, a] + logp[u, 0, 1, c]), (a, c)) for a in range(3) for c in range(4)),
                       reverse=True)[:5]  # fmt: skip
        assert [tuple(t) for t in both.tokens[u].tolist()] == [code for _, code in brute]
        assert both.score[u].tolist() == pytest.approx([v for v, _ in brute])
    # one digit per step: (a, c) is reached in two orders and kept once, with the larger score
    one = free_extend(table, start, logp, subsets(2, 1), width=12)
    two = free_extend(table, one, logp.expand(-1, one.tokens.shape[1], -1, -1), subsets(2, 1), width=12)
    rows = [tuple(t) for t in two.tokens[0].tolist()]
    assert len(set(rows)) == 12 and all(a >= 0 and c >= 0 for a, c in rows)
    items, _ = free_finish(table, two, 12)
    named = {(0, 1): 0, (2, 3): 1, (1, 0): 2}
    assert items[0].tolist() == [named.get(code, INVALID) for code in rows]  # ranks kept, 9 codes of no item


def test_model_specific_options_survive_the_sampler_options() -> None:
    """Every SampleConfig field a model reads reaches it through SamplerOptions (none silently dropped)."""
    from stages.samplers.base import SamplerOptions

    opts = SamplerOptions.of(SampleConfig(sample_steps=3, constrained=False, beam=7))
    assert (opts.sample_steps, opts.constrained, opts.beam) == (3, False, 7)
    read = {"beam", "first_beam", "digits_per_step", "steps", "sample_steps", "strategy", "top_k", "top_p", "temperature",
            "order", "renormalize", "constrained", "use_cache", "seed"}  # fmt: skip
    assert read <= set(SamplerOptions.__dataclass_fields__) and read <= set(SampleConfig.model_fields)


def test_the_runs_whole_code_search_applies_at_its_own_step_size_only() -> None:
    from stages.config.sample import SampleConfig
    from stages.sample import whole_code

    meta = {"digits_per_step": 4, "whole_code": "beam"}
    assert whole_code(SampleConfig(), meta, 4) == "beam"  # the run's choice
    assert whole_code(SampleConfig(), meta, 2) == "exact"  # another step size: the run's search does not apply
    assert whole_code(SampleConfig(whole_code="exact"), meta, 4) == "exact"  # asked for
    assert whole_code(SampleConfig(), {"digits_per_step": 4}, 4) == "exact"  # runs choosing the exhaustive step
