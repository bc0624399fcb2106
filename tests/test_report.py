"""`gdr evaluate --report`: per-user metric vectors, paired bootstrap / permutation, the report folder."""

from __future__ import annotations

import base64
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gdr_cli.app import main
from gdr_cli.errors import GdrError
from gdr_cli.manifest import Manifest, file_sha256
from stages.metrics.compare import against_best, compare_runs
from stages.metrics.paired import bootstrap_means, paired_compare, percentile_interval, sign_flip_pvalues
from stages.metrics.scoring import rank_targets

PNG = b"\x89PNG\r\n\x1a\n"


def gdr(*args: str) -> int:
    return main(list(args))


# --- per-user vectors -------------------------------------------------------------------------


def test_per_user_ranks_and_metrics_by_hand() -> None:
    recs = pl.DataFrame(
        {
            "user": [0, 0, 0, 0, 1, 1, 3, 3, 3],
            "rank": [1, 2, 3, 4, 1, 2, 1, 5, 9],
            "item": [10, None, 10, 11, 20, 21, 30, 31, 32],
            "score": [0.0] * 9,
        },
        schema={"user": pl.Int32, "rank": pl.Int32, "item": pl.Int32, "score": pl.Float32},
    )
    # targets in a user order that is not sorted: the vectors follow it.
    targets = pl.DataFrame(
        {"user": [3, 2, 0, 1], "target": [32, 5, 11, 99]}, schema={"user": pl.Int32, "target": pl.Int32}
    )
    ranked = rank_targets(recs, targets)
    # user 3: ranks 1, 5, 9 re-ranked to 1, 2, 3 -> target 32 at 3; user 2 has no list; user 0: valid
    # deduplicated list [10, 11] -> rank 2; user 1 misses.
    assert ranked.users.tolist() == [3, 2, 0, 1]
    assert ranked.ranks.tolist() == [3.0, math.inf, 2.0, math.inf]
    assert (ranked.invalid, ranked.duplicates, ranked.rows) == (1, 1, 9)
    v = ranked.per_user([1, 2, 3])
    assert v["recall@2"].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert v["recall@3"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert v["ndcg@3"] == pytest.approx([0.5, 0.0, 1 / math.log2(3), 0.0])
    assert v["mrr@3"] == pytest.approx([1 / 3, 0.0, 0.5, 0.0])
    assert v["mrr@1"].tolist() == [0.0, 0.0, 0.0, 0.0]
    frame = ranked.frame()
    assert frame.schema == pl.Schema({"user": pl.Int32, "rank": pl.Float64})


# --- paired bootstrap and permutation ----------------------------------------------------------


def test_run_against_itself_is_exactly_zero() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(500)
    r = paired_compare(a, a.copy(), samples=1000, permutations=1000, level=0.95, seed=0)
    assert (r.diff, r.low, r.high, r.p_value) == (0.0, 0.0, 0.0, 1.0)

    users = np.arange(500)
    per_user = {"x": {"ndcg@10": a}, "x-again": {"ndcg@10": a.copy()}, "worse": {"ndcg@10": a * 0.5}}
    comp = compare_runs(
        per_user,
        dict.fromkeys(per_user, users),
        metrics=["ndcg@10"],
        best_by="ndcg@10",
        samples=1000,
        permutations=1000,
        level=0.95,
        seed=0,
    )
    same = comp.pairwise.filter((pl.col("run_a") == "x") & (pl.col("run_b") == "x-again")).row(0, named=True)
    assert (same["diff"], same["diff_low"], same["diff_high"], same["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    vs_best = against_best(comp)
    assert comp.best == "x" and vs_best["run"].to_list() == ["x", "x-again", "worse"]
    assert vs_best.row(0) == ("x", 0.0, 0.0, 0.0, 1.0)
    worse = vs_best.row(2, named=True)  # worse - best, so negative
    assert worse["diff"] == pytest.approx(-0.5 * a.mean()) and worse["diff_high"] < 0


def test_clearly_different_runs() -> None:
    rng = np.random.default_rng(7)
    n = 400
    a = (rng.random(n) < 0.6).astype(float)
    b = (rng.random(n) < 0.2).astype(float)
    r = paired_compare(a, b, samples=1000, permutations=1000, level=0.95, seed=3)
    assert r.diff == pytest.approx(a.mean() - b.mean())
    assert r.p_value == pytest.approx(1 / 1001)  # no sign flip reaches a 0.4 difference over 400 users
    assert 0 < r.low < r.diff < r.high
    # Width of a 95% interval of a mean difference: about 2 * 1.96 * sd(a - b) / sqrt(n).
    expected = 2 * 1.96 * (a - b).std() / math.sqrt(n)
    assert r.high - r.low == pytest.approx(expected, rel=0.15)
    # Same seed, same numbers; the order of a and b flips the sign of everything.
    assert paired_compare(a, b, samples=1000, permutations=1000, level=0.95, seed=3) == r
    rev = paired_compare(b, a, samples=1000, permutations=1000, level=0.95, seed=3)
    assert (rev.diff, rev.low, rev.high) == pytest.approx((-r.diff, -r.high, -r.low))


def test_sign_flip_pvalue_exact_cases() -> None:
    rng = np.random.default_rng(0)
    # d = [1, 1, 1]: |mean of flipped| reaches 1 only when all three signs agree: 2 of 8 patterns.
    p = sign_flip_pvalues(np.ones((3, 1)), 8000, rng)
    assert p[0] == pytest.approx(0.25, abs=0.015)
    # d = [1, -1]: the observed mean is 0, every flip is as extreme.
    assert sign_flip_pvalues(np.array([[1.0], [-1.0]]), 500, rng)[0] == 1.0


def test_bootstrap_means_resample_users() -> None:
    rng = np.random.default_rng(0)
    const = np.full((50, 1), 0.25)
    lo, hi = percentile_interval(bootstrap_means(const, 200, rng), 0.95)
    assert (lo[0], hi[0]) == (0.25, 0.25)
    # One user worth 1, the rest 0: a draw's mean is (times that user was drawn) / U, whose
    # expectation is 1/U and which is never negative or above 1.
    values = np.zeros((20, 1))
    values[7] = 1.0
    means = bootstrap_means(values, 20000, rng)[:, 0]
    assert means.mean() == pytest.approx(1 / 20, rel=0.05)
    counts = np.round(means * 20)
    assert np.allclose(counts, means * 20) and counts.min() == 0
    # P(user 7 never drawn) = (19/20)^20
    assert (counts == 0).mean() == pytest.approx((19 / 20) ** 20, abs=0.015)
    # columns share the draw: a column that is twice another has exactly twice its means
    pair = np.stack([values[:, 0], 2 * values[:, 0]], axis=1)
    m = bootstrap_means(pair, 100, rng)
    assert np.array_equal(m[:, 1], 2 * m[:, 0])


def test_runs_on_different_users_are_an_error() -> None:
    v = np.array([0.0, 1.0, 0.5])
    with pytest.raises(GdrError, match="different users"):
        compare_runs(
            {"a": {"ndcg@10": v}, "b": {"ndcg@10": v}},
            {"a": np.array([0, 1, 2]), "b": np.array([0, 1, 3])},
            metrics=["ndcg@10"],
            best_by="ndcg@10",
            samples=100,
            permutations=100,
            level=0.95,
            seed=0,
        )


def test_runs_are_aligned_by_user() -> None:
    users = np.array([4, 1, 3, 0, 2])
    v = np.array([0.4, 0.1, 0.3, 0.0, 0.2])
    order = np.argsort(users)  # the same per-user values, listed in another user order
    comp = compare_runs(
        {"a": {"recall@5": v}, "b": {"recall@5": v[order]}},
        {"a": users, "b": users[order]},
        metrics=["recall@5"],
        best_by="recall@5",
        samples=100,
        permutations=100,
        level=0.95,
        seed=0,
    )
    row = comp.pairwise.row(0, named=True)
    assert (row["diff"], row["diff_low"], row["diff_high"], row["p_value"]) == (0.0, 0.0, 0.0, 1.0)


# --- the report folder, end to end --------------------------------------------------------------


class _Page(HTMLParser):
    """Rows of the first table's body and the src of every <img>."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.images: list[str] = []
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append([])
        elif tag == "td" and self._in_body:
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic data with pop (kept / excluded history) and a tiny tiger run that has a training log."""
    root = tmp_path_factory.mktemp("report")
    d = ["--data-dir", str(root), "--config", "tiny"]
    assert gdr("preprocess", "synthetic", "--name", "syn", *d) == 0
    assert gdr("build-ids", "syn", "--method", "rqkmeans", *d) == 0
    assert gdr("train-rec", "syn", "--model", "pop", *d) == 0
    assert gdr("train-rec", "syn", "--model", "tiger", "--ids", "rqkmeans", "--set", "train.max_epochs=1", *d) == 0
    assert gdr("sample", "syn", "--run", "pop", *d) == 0
    assert gdr("sample", "syn", "--run", "pop", "--exclude-history", "--name", "pop-excl", *d) == 0
    assert gdr("sample", "syn", "--run", "tiger", *d) == 0
    return root


def test_report_renders(syn_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert gdr("evaluate", "syn", "--report", "--json", "--data-dir", str(syn_root), "--config", "tiny") == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"pop", "pop-excl", "tiger"}
    folder = syn_root / "syn" / "reports" / "test"
    assert not list(folder.parent.glob(".test.*"))  # no staging leftovers

    page = _Page()
    page.feed((folder / "report.html").read_text())
    assert [row[0] for row in page.rows] == ["pop", "pop-excl", "tiger"]
    table = pl.read_parquet(folder / "comparison.parquet")
    head = 1 + 3 * 4  # run + recall/ndcg/mrr at 4 cut-offs
    for row, name in zip(page.rows, table["run"], strict=True):
        assert row[1:head] == [f"{table.filter(pl.col('run') == name)[c][0]:.4f}" for c in table.columns[4:16]]
    assert len(page.images) == 2  # metric bars and training curves (tiger has a log; pop has none)
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG)
    assert (folder / "metrics.png").read_bytes().startswith(PNG) and (folder / "curves.png").read_bytes().startswith(
        PNG
    )

    # table: metrics equal the per-run metrics, details from the run / recs manifests, paired test vs best
    best = table.sort("ndcg@10", descending=True)["run"][0]
    for name, m in results.items():
        row = table.filter(pl.col("run") == name).row(0, named=True)
        assert row["ndcg@10"] == pytest.approx(m["ndcg@10"]) and row["recall@5"] == pytest.approx(m["recall@5"])
        assert row["ndcg@10_low"] <= row["ndcg@10"] <= row["ndcg@10_high"]
        assert row["exclude_history"] == (name == "pop-excl")
        assert row["users_per_s"] > 0 and row["trained_run"] == ("tiger" if name == "tiger" else "pop")
        if name == best:
            assert (row["diff"], row["diff_low"], row["diff_high"], row["p_value"]) == (0.0, 0.0, 0.0, 1.0)
        else:
            assert row["diff"] == pytest.approx(m["ndcg@10"] - results[best]["ndcg@10"])
            assert 0 < row["p_value"] <= 1 and row["diff_low"] <= row["diff"] <= row["diff_high"]
    tiger = table.filter(pl.col("run") == "tiger").row(0, named=True)
    run_manifest = json.loads((syn_root / "syn" / "runs" / "tiger" / "manifest.json").read_text())
    assert tiger["params"] == run_manifest["stats"]["params"] and tiger["train_time_s"] == run_manifest["wall_time_s"]
    assert table.filter(pl.col("run") == "pop")["params"][0] == 0  # counts, no trained parameters
    assert pl.read_parquet(folder / "pairwise.parquet").height == 3  # every pair of 3 runs

    manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
    assert manifest.config["runs"] == ["pop", "pop-excl", "tiger"] and "ndcg@10" in manifest.config["metrics"]
    assert set(manifest.inputs) == {"metrics/pop", "metrics/pop-excl", "metrics/tiger", "runs/pop", "runs/tiger"}
    assert manifest.stats["best"] == best
    assert {p.name for p in folder.iterdir()} == {*manifest.outputs, "manifest.json"}
    assert all(file_sha256(folder / f) == h for f, h in manifest.outputs.items())
    md = (folder / "comparison.md").read_text()
    assert "![metrics](metrics.png)" in md and "| pop-excl |" in md and "sign flips" in md
    ranks = pl.read_parquet(syn_root / "syn" / "metrics" / "tiger" / "test" / "ranks.parquet")
    assert ranks.height == results["tiger"]["users"]


def test_plain_evaluate_writes_a_staged_folder(syn_root: Path) -> None:
    assert gdr("evaluate", "syn", "--run", "pop", "--data-dir", str(syn_root)) == 0
    folder = syn_root / "syn" / "reports" / "test"
    assert {p.name for p in folder.iterdir()} == {"comparison.parquet", "comparison.md", "metrics.png", "manifest.json"}
    manifest = Manifest.model_validate_json((folder / "manifest.json").read_text())
    assert manifest.config["runs"] == ["pop"] and manifest.config["report"] is False
    assert "p_value" not in pl.read_parquet(folder / "comparison.parquet").columns
    # a report of a single run: no pair to test, the run is its own best
    assert gdr("evaluate", "syn", "--run", "tiger", "--report", "--data-dir", str(syn_root)) == 0
    page = _Page()
    page.feed((folder / "report.html").read_text())
    assert [row[0] for row in page.rows] == ["tiger"] and page.rows[0][-2:] == ["best", "–"]
    assert pl.read_parquet(folder / "pairwise.parquet").height == 0


def test_interrupted_report_keeps_the_previous_one(syn_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = ["--data-dir", str(syn_root)]
    assert gdr("evaluate", "syn", "--run", "pop", "--run", "tiger", "--report", *d) == 0
    folder = syn_root / "syn" / "reports" / "test"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    import stages.evaluate

    real = stages.evaluate.write_manifest

    def interrupted(where: Path, manifest: Manifest) -> None:
        if "reports" in where.parts:
            raise KeyboardInterrupt
        real(where, manifest)

    monkeypatch.setattr(stages.evaluate, "write_manifest", interrupted)
    assert gdr("evaluate", "syn", "--run", "pop", *d) == 130
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["test"]


def test_report_without_runs_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path), "--config", "tiny"]
    assert gdr("preprocess", "synthetic", "--name", "syn", *d) == 0
    capsys.readouterr()
    assert gdr("evaluate", "syn", "--report", *d) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no test recommendations to report" in err and "gdr sample syn" in err
    assert not (tmp_path / "syn" / "reports").exists()


def test_best_by_must_be_a_scored_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gdr("evaluate", "syn", "--report", "--set", "best_by=ndcg@7", "--data-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "best_by" in err and "ndcg@7" in err


def test_sample_reports_history_share_and_repeat_gate(syn_root: Path) -> None:
    """Every recs manifest counts the listed items the model read in the history; a repeat head adds its gate."""
    from stages.data.sequences import eval_histories

    splits = pl.read_parquet(syn_root / "syn" / "processed" / "splits.parquet")
    for name in ("pop", "pop-excl", "tiger"):
        manifest = json.loads((syn_root / "syn" / "recs" / name / "test" / "manifest.json").read_text())
        stats, max_len = manifest["stats"], manifest["config"]["max_len"]
        window = eval_histories(splits, "test", max_len, with_target=False)
        recs = pl.read_parquet(syn_root / "syn" / "recs" / name / "test" / "recs.parquet")
        seen = {int(u): set(h.tolist()) - {-1} for u, h in zip(window["user"], window["history"], strict=True)}
        count = sum(item in seen[user] for user, item in zip(recs["user"], recs["item"], strict=True))
        assert stats["history_in_list"] == pytest.approx(count / stats["users"], abs=1e-3)
        if name == "pop-excl":
            assert stats["history_in_list"] == 0
        assert ("repeat_gate" in stats) == (name == "tiger")  # tiger's repeat head is on by default
    assert (
        0
        < json.loads((syn_root / "syn" / "recs" / "tiger" / "test" / "manifest.json").read_text())["stats"][
            "repeat_gate"
        ]
        < 1
    )
