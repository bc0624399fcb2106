"""The shared training loop: learning, selection, determinism, exact resume, NaN, budget, run folder."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdr_cli.errors import GdrError
from stages.config.training import TrainLoopConfig
from stages.data.sequences import eval_histories, training_examples
from stages.models.base import Recommender
from stages.models.fast_dropout import keep_mask
from stages.training.checkpoint import CHECKPOINT
from stages.training.loop import LOG_FILE, FitResult, epoch_order, fit
from stages.training.optim import lr_factor, param_groups
from stages.training.run import save_run
from stages.training.validation import make_validator

N_ITEMS = 40


class BagRec(Recommender):
    """Tiny real next-item model: mean of history embeddings -> dropout -> layer norm -> logits."""

    kind = "bag"
    samplers = ("topk",)

    def __init__(self, n_items: int = N_ITEMS, dim: int = 16, dropout: float = 0.2):
        super().__init__(n_items=n_items, dim=dim, dropout=dropout)
        self.emb = nn.Embedding(n_items + 1, dim)  # last row = padding
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, n_items)

    def logits(self, history: Tensor) -> Tensor:  # [B, L] -> [B, n_items]
        pad = history < 0
        e = self.emb(torch.where(pad, self.emb.num_embeddings - 1, history)) * (~pad)[..., None]
        x = e.sum(1) / (~pad).sum(1, keepdim=True).clamp(min=1)
        return self.out(self.norm(self.drop(x)))

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(self.logits(batch["history"]), batch["target"])

    def recommend(self, history: Tensor, *, k: int, sampler: str | None = None, options=None) -> tuple[Tensor, Tensor]:
        scores, items = self.logits(history).topk(k, dim=1)
        return items, scores


class Interrupting(BagRec):
    """Stops training at forward call `at`: raises KeyboardInterrupt mid-step, or sends itself SIGINT."""

    def __init__(self, at: int, how: str):
        super().__init__()
        self.at, self.how, self.calls = at, how, 0

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        self.calls += 1
        if self.calls == self.at:
            if self.how == "raise":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return super().loss(batch)


@pytest.fixture(autouse=True)
def one_thread():
    """2-core CI boxes run several test processes: oversubscribed intra-op threads crawl."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def synthetic_splits(users: int = 120, seed: int = 0) -> pl.DataFrame:
    """Sequences walking the catalogue in steps of 1 or 3 (learnable from the last item)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        stride = 1 + 2 * (u % 2)
        seq = (rng.integers(N_ITEMS) + stride * np.arange(rng.integers(5, 12))) % N_ITEMS
        rows.append((u, seq[:-2].tolist(), int(seq[-2]), int(seq[-1])))
    return pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "train": [r[1] for r in rows],
            "valid": [r[2] for r in rows],
            "test": [r[3] for r in rows],
        },
        schema={"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    )


@pytest.fixture(scope="module")
def data() -> dict:
    s = synthetic_splits()
    ex = training_examples(s, 4)
    ev = eval_histories(s, "valid", 4, with_target=True)
    return {"train": {"history": ex["history"], "target": ex["target"]}, "valid": ev}


def cfg(**kw) -> TrainLoopConfig:
    base = dict(
        lr=1e-2,
        batch_size=32,
        max_epochs=3,
        warmup_steps=5,
        eval_every=10,
        patience=0,
        checkpoint_every=7,
        log_every=4,
        eval_batch_size=64,
    )
    return TrainLoopConfig(**{**base, **kw})


def new_model(cls=BagRec, **kw) -> BagRec:
    torch.manual_seed(0)  # the caller owns initialisation
    return cls(**kw)


def run_fit(model: nn.Module, data: dict, workdir: Path, c: TrainLoopConfig, **kw) -> FitResult:
    v = data["valid"]
    validate = make_validator(v["history"], v["target"], batch_size=c.eval_batch_size)
    return fit(
        model=model, train=data["train"], validate=validate, cfg=c, seed=kw.pop("seed", 3), workdir=workdir, **kw
    )


def same_state(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_fit_learns_and_keeps_the_best_validation_state(data: dict, tmp_path: Path) -> None:
    model = new_model()
    res = run_fit(model, data, tmp_path, cfg(max_epochs=8, patience=3))
    assert res.best_metric > 0.5  # random ranking of 40 items scores ~0.07
    assert res.stop_reason in ("early-stopping", "max-epochs")
    vals = [r["val_ndcg@10"] for r in res.log if r["val_ndcg@10"] is not None]
    assert res.best_metric == max(vals)
    assert res.best_step == next(r["step"] for r in res.log if r["val_ndcg@10"] == res.best_metric)
    assert res.best_state.keys() == model.state_dict().keys()
    assert all(t.device.type == "cpu" for t in res.best_state.values())
    ones = torch.ones(3, 8)  # fit trains with the cheaper-mask dropout (stages/models/fast_dropout.py), same p
    torch.manual_seed(6)
    dropped = model.drop.train()(ones)
    torch.manual_seed(6)
    keep, scale = keep_mask(ones.shape, 0.2, ones.device)
    assert torch.equal(dropped, keep * scale)
    model.drop.eval()
    assert {"step", "epoch", "loss", "lr", "examples_per_s", "val_ndcg@10", "wall_s"} <= set(res.log[0])
    # the best state really scores best_metric
    model.load_state_dict(res.best_state)
    model.eval()
    v = data["valid"]
    with torch.no_grad():
        total, count = make_validator(v["history"], v["target"], batch_size=50)(model, 0, 1)
    assert total / count == pytest.approx(res.best_metric)
    assert "stopped" in (tmp_path / LOG_FILE).read_text()


def test_early_stopping_counts_validations_without_improvement(data: dict, tmp_path: Path) -> None:
    res = run_fit(new_model(), data, tmp_path, cfg(lr=1e-9, warmup_steps=0, max_epochs=50, patience=2, eval_every=3))
    vals = [r["val_ndcg@10"] for r in res.log if r["val_ndcg@10"] is not None]
    assert res.stop_reason == "early-stopping"
    # stopped at the 2nd validation in a row without a strictly better score
    assert vals[-1] <= res.best_metric and vals[-2] <= res.best_metric
    assert res.steps < 50 * 10


def test_max_steps_ends_with_a_validation(data: dict, tmp_path: Path) -> None:
    res = run_fit(new_model(), data, tmp_path, cfg(max_steps=13))
    assert (res.steps, res.stop_reason) == (13, "max-steps")
    assert res.log[-1]["step"] == 13 and res.log[-1]["val_ndcg@10"] is not None


def test_max_epochs_and_per_epoch_validation(data: dict, tmp_path: Path) -> None:
    n = len(data["train"]["target"])
    res = run_fit(new_model(), data, tmp_path, cfg(max_epochs=2, eval_every=0))
    per_epoch = -(-n // 32)
    assert (res.steps, res.stop_reason) == (2 * per_epoch, "max-epochs")
    assert [r["step"] for r in res.log if r["val_ndcg@10"] is not None] == [per_epoch, 2 * per_epoch]


def test_budget_stops_and_still_selects(data: dict, tmp_path: Path) -> None:
    res = run_fit(new_model(), data, tmp_path, cfg(max_minutes=1e-6, max_epochs=100))
    assert res.stop_reason == "budget" and res.steps == 1
    assert res.best_state and res.best_step == 1


def test_budget_stopped_run_resumes_when_the_budget_is_raised(data: dict, tmp_path: Path) -> None:
    first = run_fit(new_model(), data, tmp_path, cfg(max_minutes=1e-6, max_steps=12))
    assert (first.stop_reason, first.steps) == ("budget", 1)
    again = run_fit(new_model(), data, tmp_path, cfg(max_minutes=1e-6, max_steps=12), resume=True)
    assert (again.stop_reason, again.steps) == ("budget", 1)  # same budget: nothing more to do
    more = run_fit(new_model(), data, tmp_path, cfg(max_steps=12), resume=True)
    assert (more.stop_reason, more.steps) == ("max-steps", 12)


def test_same_seed_same_weights_other_seed_differs(data: dict, tmp_path: Path) -> None:
    c = cfg(max_steps=25)
    a, b, other = new_model(), new_model(), new_model()
    ra = run_fit(a, data, tmp_path / "a", c)
    rb = run_fit(b, data, tmp_path / "b", c)
    run_fit(other, data, tmp_path / "c", c, seed=4)
    assert same_state(a.state_dict(), b.state_dict())
    assert same_state(ra.best_state, rb.best_state)
    assert not same_state(a.state_dict(), other.state_dict())


def test_fit_leaves_the_global_rng_state_unchanged(data: dict, tmp_path: Path) -> None:
    """Dropout draws from a fork of the torch RNG: the caller's state is the same after fit (and after a
    Ctrl-C), and a caller's later draws do not depend on whether fit ran."""
    model = new_model()
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    expected = torch.rand(5)
    torch.set_rng_state(before)
    run_fit(model, data, tmp_path / "a", cfg(max_steps=9))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(torch.rand(5), expected)
    stopping = Interrupting(at=4, how="raise")
    torch.set_rng_state(before)
    with pytest.raises(KeyboardInterrupt):
        run_fit(stopping, data, tmp_path / "b", cfg(max_steps=9))
    assert torch.equal(torch.get_rng_state(), before)
    # the seed alone decides the weights, whatever the caller's RNG state was
    torch.manual_seed(99)
    other = new_model()
    torch.manual_seed(7)
    run_fit(other, data, tmp_path / "c", cfg(max_steps=9))
    assert same_state(model.state_dict(), other.state_dict())


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    assert torch.equal(epoch_order(1, 2, 50), epoch_order(1, 2, 50))
    assert not torch.equal(epoch_order(1, 2, 50), epoch_order(1, 3, 50))
    assert not torch.equal(epoch_order(1, 2, 50), epoch_order(2, 2, 50))
    assert sorted(epoch_order(5, 0, 50).tolist()) == list(range(50))


@pytest.mark.parametrize("how", ["raise", "sigint"])
def test_interrupted_then_resumed_equals_uninterrupted(data: dict, tmp_path: Path, how: str) -> None:
    c = cfg(max_epochs=3, patience=2)  # steps 0..~39, checkpoints every 7, validations every 10
    fp = {"config": c.model_dump(), "data": "abc"}
    ref_model = new_model()
    ref = run_fit(ref_model, data, tmp_path / "ref", c, fingerprint=fp)

    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        run_fit(new_model(Interrupting, at=24, how=how), data, work, c, fingerprint=fp)
    saved = torch.load(work / CHECKPOINT, weights_only=True)
    # SIGINT is deferred to the end of step 24; an exception inside step 24 leaves the last checkpoint (21)
    assert saved["step"] == (24 if how == "sigint" else 21)

    resumed_model = new_model()
    res = run_fit(resumed_model, data, work, c, fingerprint=fp, resume=True)
    assert same_state(resumed_model.state_dict(), ref_model.state_dict())
    assert same_state(res.best_state, ref.best_state)
    assert (res.best_metric, res.best_step, res.steps, res.stop_reason) == (
        ref.best_metric,
        ref.best_step,
        ref.steps,
        ref.stop_reason,
    )
    key = [(r["step"], r["loss"], r["val_ndcg@10"]) for r in ref.log]
    assert [(r["step"], r["loss"], r["val_ndcg@10"]) for r in res.log] == key
    assert "resumed at step" in (work / LOG_FILE).read_text()


def test_resuming_a_finished_run_returns_its_result(data: dict, tmp_path: Path) -> None:
    c = cfg(max_steps=12)
    first_model = new_model()
    first = run_fit(first_model, data, tmp_path, c)
    again_model = BagRec()
    again = run_fit(again_model, data, tmp_path, c, resume=True)
    assert (again.steps, again.stop_reason, again.best_step) == (first.steps, first.stop_reason, first.best_step)
    assert same_state(again_model.state_dict(), first_model.state_dict())


def test_resume_with_changed_fingerprint_names_the_keys(data: dict, tmp_path: Path) -> None:
    c = cfg(max_steps=8)
    run_fit(new_model(), data, tmp_path, c, fingerprint={"config": {"train": {"lr": 0.01}, "seed": 1}, "data": "x"})
    with pytest.raises(GdrError, match=r"config\.train\.lr") as err:
        run_fit(
            new_model(),
            data,
            tmp_path,
            c,
            resume=True,
            fingerprint={"config": {"train": {"lr": 0.02}, "seed": 1}, "data": "x"},
        )
    assert "seed" not in err.value.what and err.value.fix


def test_resume_without_checkpoint_says_how_to_start(data: dict, tmp_path: Path) -> None:
    with pytest.raises(GdrError, match="no checkpoint") as err:
        run_fit(new_model(), data, tmp_path / "none", cfg(), resume=True)
    assert "without --resume" in err.value.fix
    assert not (tmp_path / "none").exists()  # nothing written


def test_corrupted_checkpoint_is_a_user_error(data: dict, tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / CHECKPOINT).write_bytes(b"not a checkpoint")
    with pytest.raises(GdrError, match="unreadable checkpoint"):
        run_fit(new_model(), data, tmp_path, cfg(), resume=True)


def test_nan_loss_stops_with_the_step_and_keeps_last_good_checkpoint(data: dict, tmp_path: Path) -> None:
    c = cfg(lr=1e6, warmup_steps=1000, clip_norm=0, checkpoint_every=1, max_steps=200, log_every=50, eval_every=0)
    pattern = r"(loss|weights) became (NaN|inf|NaN/inf) at step (\d+)"
    with pytest.raises(GdrError, match=pattern) as err:
        run_fit(new_model(), data, tmp_path, c)
    assert "train.lr" in err.value.fix
    bad_step = int(re.search(pattern, err.value.what).group(3))
    assert bad_step > 10  # the weights blow up over several steps
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert saved["step"] == bad_step - 1  # the checkpoint of the last finite step
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    # losses are read back only every few steps: still stopped, and only a finite checkpoint kept
    sparse = c.model_copy(update={"checkpoint_every": 5, "log_every": 3})
    with pytest.raises(GdrError, match=pattern) as err:
        run_fit(new_model(), data, tmp_path / "sparse", sparse)
    assert bad_step <= int(re.search(pattern, err.value.what).group(3)) <= bad_step + 3
    saved = torch.load(tmp_path / "sparse" / CHECKPOINT, weights_only=True)
    assert saved["step"] == (bad_step - 1) // 5 * 5
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_checkpoint_loads_with_weights_only(data: dict, tmp_path: Path) -> None:
    run_fit(new_model(), data, tmp_path, cfg(max_steps=10), fingerprint={"a": 1})
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert {"model", "optimizer", "scaler", "rng", "best_state", "step", "epoch", "pos", "log"} <= set(state)
    assert json.loads(state["fingerprint"]) == {"a": 1}


def test_fp16_on_cpu_is_a_user_error(data: dict, tmp_path: Path) -> None:
    with pytest.raises(GdrError, match="fp16"):
        run_fit(new_model(), data, tmp_path, cfg(amp="fp16", device="cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_is_a_user_error(data: dict, tmp_path: Path) -> None:
    with pytest.raises(GdrError, match="no CUDA device"):
        run_fit(new_model(), data, tmp_path, cfg(device="cuda"))


def test_bf16_autocast_on_cpu_trains(data: dict, tmp_path: Path) -> None:
    res = run_fit(new_model(), data, tmp_path, cfg(amp="bf16", max_steps=10))
    assert res.steps == 10 and np.isfinite(res.log[-1]["loss"])


def test_lr_schedule_warms_up_then_decays_to_the_floor() -> None:
    f = [lr_factor(s, warmup=10, total=110, min_ratio=0.1) for s in range(130)]
    assert all(a < b for a, b in itertools.pairwise(f[:11]))
    assert f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:111]))
    assert f[110] == pytest.approx(0.1) and f[129] == pytest.approx(0.1)
    assert lr_factor(60, warmup=10, total=110, min_ratio=0.1) == pytest.approx(0.55)


def test_no_weight_decay_on_biases_norms_embeddings() -> None:
    m = BagRec()
    decay, no_decay = param_groups(m, 0.1)
    assert [id(p) for p in decay["params"]] == [id(m.out.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(m.emb.weight), id(m.norm.weight), id(m.norm.bias), id(m.out.bias)}
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)


def test_validator_shards_sum_to_the_whole(data: dict) -> None:
    v = data["valid"]
    model = new_model().eval()
    validate = make_validator(v["history"], v["target"], batch_size=17)
    with torch.no_grad():
        whole = validate(model, 0, 1)
        parts = [validate(model, r, 3) for r in range(3)]
    assert sum(p[1] for p in parts) == whole[1] == len(v["target"])
    assert sum(p[0] for p in parts) == pytest.approx(whole[0])


def test_save_run_writes_best_weights_log_and_curve(data: dict, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = new_model()
    res = run_fit(model, data, tmp_path / "work", cfg(max_steps=30))
    out = tmp_path / "run"
    out.mkdir()
    save_run(folder=out, model=model, result=res, meta={"max_len": 4})
    assert {"model.safetensors", "model.json", "train_log.parquet", "curve.png", LOG_FILE} <= {
        p.name for p in out.iterdir()
    }
    assert same_state(load_file(out / "model.safetensors"), res.best_state)
    assert json.loads((out / "model.json").read_text())["meta"] == {"max_len": 4}
    log = pl.read_parquet(out / "train_log.parquet")
    assert log["step"].to_list() == [r["step"] for r in res.log]
    assert log["val_ndcg@10"].drop_nulls().max() == pytest.approx(res.best_metric)
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_fields_are_documented_and_strict() -> None:
    for name, info in TrainLoopConfig.model_fields.items():
        assert info.description, name
    with pytest.raises(ValueError):
        TrainLoopConfig(learning_rate=1e-3)
    with pytest.raises(ValueError):
        TrainLoopConfig(device="tpu")


@pytest.mark.gpu
def test_cuda_autocast_trains_and_resumes(data: dict, tmp_path: Path) -> None:
    c = cfg(device="cuda", amp="auto", max_epochs=6, patience=0)
    res = run_fit(new_model(), data, tmp_path / "full", c)
    assert res.best_metric > 0.3 and res.stop_reason == "max-epochs"
    with pytest.raises(KeyboardInterrupt):
        run_fit(new_model(Interrupting, at=24, how="sigint"), data, tmp_path / "cut", c)
    saved = torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=True)
    assert saved["step"] == 24 and "cuda" in saved["rng"]
    resumed = run_fit(new_model(), data, tmp_path / "cut", c, resume=True)
    assert (resumed.steps, resumed.stop_reason) == (res.steps, res.stop_reason)


def test_single_process_distributed_helpers_are_identities() -> None:
    from stages.training import distributed as D

    info = D.dist_info()
    assert (info.rank, info.world_size, info.enabled) == (0, 1, False) and D.is_primary()
    assert D.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0] and D.all_reduce_min([3.0]) == [3.0]
    assert torch.equal(D.all_gather_bytes(torch.arange(3, dtype=torch.uint8))[0], torch.arange(3, dtype=torch.uint8))
    D.barrier()


def test_resume_with_another_process_count_is_a_user_error(data: dict, tmp_path: Path) -> None:
    run_fit(new_model(), data, tmp_path, cfg(max_steps=7))
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    state["world_size"] = 2
    torch.save(state, tmp_path / CHECKPOINT)
    with pytest.raises(GdrError, match="2 process") as err:
        run_fit(new_model(), data, tmp_path, cfg(max_steps=7), resume=True)
    assert "--nproc-per-node 2" in err.value.fix


def test_training_tensors_of_different_lengths_are_a_user_error(data: dict, tmp_path: Path) -> None:
    bad = {
        "train": {"history": data["train"]["history"], "target": data["train"]["target"][:-1]},
        "valid": data["valid"],
    }
    with pytest.raises(GdrError, match="share their first dimension"):
        run_fit(new_model(), bad, tmp_path, cfg())


def test_no_training_examples_is_a_user_error(data: dict, tmp_path: Path) -> None:
    empty = {"train": {k: v[:0] for k, v in data["train"].items()}, "valid": data["valid"]}
    with pytest.raises(GdrError, match="only 0 training examples"):
        run_fit(new_model(), empty, tmp_path, cfg())


def test_no_validation_users_is_a_user_error(data: dict, tmp_path: Path) -> None:
    none = {"train": data["train"], "valid": {k: v[:0] for k, v in data["valid"].items()}}
    with pytest.raises(GdrError, match="validation has no users"):
        run_fit(new_model(), none, tmp_path, cfg(max_steps=3))


class Recording(BagRec):
    """Records its weights (fp32 copies) at every training forward: the weights after each step."""

    def __init__(self):
        super().__init__(dropout=0.0)
        self.seen: list[list[Tensor]] = []

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        self.seen.append([p.detach().clone() for p in self.parameters()])
        return super().loss(batch)


def test_ema_weights_are_the_hand_computed_moving_average(data: dict, tmp_path: Path) -> None:
    decay, steps = 0.9, 12
    model = new_model(Recording)
    c = cfg(ema_decay=decay, max_steps=steps, eval_every=steps, patience=0)
    res = run_fit(model, data, tmp_path, c)
    final = [p.detach().clone() for p in model.parameters()]
    trajectory = [*model.seen[1:], final]  # weights after steps 1..steps
    avg = [p.clone() for p in model.seen[0]]  # the initial weights
    for s, weights in enumerate(trajectory):
        d = min(decay, (1 + s) / (10 + s))
        avg = [d * a + (1 - d) * w for a, w in zip(avg, weights, strict=True)]
    names = [n for n, _ in model.named_parameters()]
    for name, expected in zip(names, avg, strict=True):
        torch.testing.assert_close(res.best_state[name], expected, rtol=1e-5, atol=1e-6)
    # the model keeps its raw last-step weights, which differ from their average
    assert not torch.allclose(final[0], avg[0], atol=1e-4)


def test_ema_run_resumes_bit_identically(data: dict, tmp_path: Path) -> None:
    c = cfg(max_epochs=3, patience=2, ema_decay=0.95)
    fp = {"config": c.model_dump(), "data": "abc"}
    ref_model = new_model()
    ref = run_fit(ref_model, data, tmp_path / "ref", c, fingerprint=fp)
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        run_fit(new_model(Interrupting, at=24, how="sigint"), data, work, c, fingerprint=fp)
    resumed_model = new_model()
    res = run_fit(resumed_model, data, work, c, fingerprint=fp, resume=True)
    assert same_state(resumed_model.state_dict(), ref_model.state_dict())
    assert same_state(res.best_state, ref.best_state)
    assert [r["val_ndcg@10"] for r in res.log] == [r["val_ndcg@10"] for r in ref.log]


def test_decoding_choice_takes_the_cheapest_within_paired_standard_errors() -> None:
    from stages.training.flow import choose_decoding

    gen = torch.Generator().manual_seed(0)
    base = torch.rand(400, generator=gen, dtype=torch.float64)  # [U] users differ a lot
    users = {
        3: base - 0.01,  # always 0.01 below the best: paired standard error 0 (unpaired it would look level)
        2: base + 0.05 * torch.randn(400, generator=gen, dtype=torch.float64) - 0.002,  # a small, noisy gap
        1: base,  # the best
    }
    users[2] += float(users[1].mean() - users[2].mean()) - 0.002  # exactly 0.002 below the best on average
    choices = [({"digits_per_step": d}, "cpd", d) for d in (3, 2, 1)]  # cheapest first

    def validator(options: int, sampler: str, list_k: int, per_user: bool = False):
        assert per_user and sampler == "cpd"
        return lambda model, rank, world: users[options]

    se = float((users[1] - users[2]).std() / 20)
    assert se > 0.002  # the noisy gap is within one standard error
    chosen, scores, gaps = choose_decoding(None, choices, validator, tolerance=1.0)
    assert chosen == {"digits_per_step": 2}
    assert gaps == {"digits_per_step=3": 0.0, "digits_per_step=2": round(se, 6), "digits_per_step=1": 0.0}
    assert scores["digits_per_step=2"] == pytest.approx(scores["digits_per_step=1"] - 0.002, abs=1e-6)
    assert choose_decoding(None, choices, validator, tolerance=0.0)[0] == {"digits_per_step": 1}
    assert choose_decoding(None, choices, validator, tolerance=0.002 / se - 1e-3)[0] == {"digits_per_step": 1}
    users[3] = users[1].clone()  # a tie with the best: the cheaper one, whatever the tolerance
    assert choose_decoding(None, choices, validator, tolerance=0.0)[0] == {"digits_per_step": 3}
