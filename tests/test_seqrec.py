"""SASRec and HSTU: losses on hand-computed cases, causality, exact top-K with exclusion, training
windows, and learning on the synthetic dataset through the shared loop."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from gdr_cli.errors import GdrError
from gdr_cli.paths import DataPaths
from stages import preprocess
from stages.config.preprocess import PreprocessConfig
from stages.config.seqrec import HstuConfig, SasrecConfig, SeqrecTrainConfig
from stages.data.sequences import eval_histories, training_windows
from stages.inputs import open_processed
from stages.metrics.ranking import ndcg_sum
from stages.models.family import FamilyData
from stages.models.hstu import Hstu, HstuFamily
from stages.models.popularity import Popularity
from stages.models.registry import load_model, save_model
from stages.models.sasrec import Sasrec, SasrecFamily
from stages.models.seqrec import in_batch_loss, negatives_loss, softmax_loss, window_examples
from stages.training.loop import fit
from stages.training.validation import make_validator

MODELS = {"sasrec": Sasrec, "hstu": Hstu}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def splits_of(train: list[list[int]]) -> pl.DataFrame:
    n = len(train)
    return pl.DataFrame(
        {"user": list(range(n)), "train": train, "valid": [0] * n, "test": [0] * n},
        schema={"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32},
    )


# ----- losses on hand-computed cases -----------------------------------------------------------------
ITEMS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # 3 unit-norm items


def test_softmax_loss_by_hand() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # 2 users
    target = torch.tensor([0, 1])
    # user 0: logits [1, 0, -1] / 0.5 = [2, 0, -2]; user 1: [0, 1, 0] / 0.5 = [0, 2, 0]
    expected = (math.log(1 + math.exp(-2) + math.exp(-4)) + math.log(1 + 2 * math.exp(-2))) / 2
    assert softmax_loss(query, target, ITEMS, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_in_batch_loss_masks_accidental_hits() -> None:
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    target = torch.tensor([0, 1, 0])  # positions 0 and 2 share item 0: each is masked in the other's row
    t = 0.5
    rows = [
        math.log(1 + math.exp((0 - 1) / t)),  # columns: own item 0 (1), item 1 (0), item 0 again: masked
        math.log(1 + 2 * math.exp((0 - 1) / t)),  # own item 1 (1) against item 0 twice (0)
        math.log(1 + math.exp((0.8 - 0.6) / t)),  # own item 0 (0.6) against item 1 (0.8); column 0 masked
    ]
    assert in_batch_loss(query, target, ITEMS, t).item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    unmasked = F.cross_entropy(query @ ITEMS[target].T / t, torch.arange(3))
    assert in_batch_loss(query, target, ITEMS, t).item() < unmasked.item() - 0.1


def test_negatives_loss_with_a_fixed_generator() -> None:
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # 2 items: a draw is the positive (masked) or the other
    query = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    target = torch.tensor([0, 1])
    t, k = 0.5, 7
    draws = torch.randint(2, (2, k), generator=torch.Generator().manual_seed(5))
    others = (draws != target[:, None]).sum(1).tolist()  # unmasked negatives per user
    assert 0 < sum(others) < 2 * k  # the case exercises both masked and kept draws
    expected = (
        math.log(1 + others[0] * math.exp((0.8 - 0.6) / t)) + math.log(1 + others[1] * math.exp((1 - 0) / t))
    ) / 2
    got = negatives_loss(query, target, items, t, k, torch.Generator().manual_seed(5))
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("loss", ["softmax", "sampled_softmax", "negatives"])
def test_model_loss_ignores_padded_targets(kind: str, loss: str) -> None:
    """The window loss is the mean over real targets of the per-position loss, whatever the padding."""
    model = MODELS[kind](n_items=12, max_len=5, d_model=8, n_heads=2, n_layers=1, loss=loss, temperature=0.2,
                         num_negatives=4, dropout=0.0, seed=1).eval()  # fmt: skip
    seq = torch.tensor([[-1, -1, -1, 3, 4, 5], [1, 2, 3, 4, 5, 6]])
    state = int(model.draws)
    got = model.loss({"seq": seq})
    query = model.queries(seq[:, :-1])
    keep = (seq[:, 1:] >= 0) & (seq[:, :-1] >= 0)  # the first item of a user is no target
    q, tgt = query[keep], seq[:, 1:][keep]
    assert len(tgt) == 7
    if loss == "softmax":
        expected = softmax_loss(q, tgt, model.item_vectors(), 0.2)
    elif loss == "sampled_softmax":
        expected = in_batch_loss(q, tgt, F.normalize(model.item_emb.weight, dim=-1), 0.2)
    else:
        model.draws.fill_(state)
        expected = negatives_loss(q, tgt, model.item_vectors(), 0.2, 4, model.negatives_generator())
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_negatives_differ_by_step_and_repeat_by_seed() -> None:
    a = Sasrec(n_items=50, max_len=4, d_model=8, n_layers=1, loss="negatives", num_negatives=16, dropout=0.0, seed=3)
    b = Sasrec(n_items=50, max_len=4, d_model=8, n_layers=1, loss="negatives", num_negatives=16, dropout=0.0, seed=3)
    draws_a = [torch.randint(50, (8,), generator=a.negatives_generator()) for _ in range(2)]
    draws_b = [torch.randint(50, (8,), generator=b.negatives_generator()) for _ in range(2)]
    assert torch.equal(draws_a[0], draws_b[0]) and torch.equal(draws_a[1], draws_b[1])
    assert not torch.equal(draws_a[0], draws_a[1])
    assert int(a.draws) == 2


# ----- the encoders ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_causal_and_padding_blind(kind: str) -> None:
    model = MODELS[kind](n_items=30, max_len=8, d_model=16, n_heads=2, n_layers=2, dropout=0.0, seed=0).eval()
    seq = torch.tensor([[-1, -1, 4, 7, 1, 9, 2, 5]])
    out = model.encode(seq)
    later = seq.clone()
    later[0, 5] = 20  # a later item changes
    out2 = model.encode(later)
    assert torch.allclose(out[0, :5], out2[0, :5], atol=1e-6)
    assert not torch.allclose(out[0, 5:], out2[0, 5:], atol=1e-4)
    # the same items behind a shorter history give the same scores (padding is never attended to)
    assert torch.allclose(model.scores(seq[:, 2:]), model.scores(seq), atol=1e-6)
    assert torch.allclose(model.scores(torch.tensor([[-1, -1, -1, 4, 7, 1, 9, 2, 5]])), model.scores(seq), atol=1e-6)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_same_seed_same_weights(kind: str) -> None:
    a, b, c = (MODELS[kind](n_items=20, max_len=6, d_model=8, seed=s) for s in (4, 4, 5))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["item_emb.weight"], sc["item_emb.weight"])
    w = sa["item_emb.weight"][:-1]
    assert w.abs().max() <= 0.04 and 0.01 < w.std() < 0.02  # truncated normal, std 0.02 cut at 2 std
    assert torch.all(sa["item_emb.weight"][-1] == 0)  # padding row


def test_bad_sizes_are_user_errors() -> None:
    with pytest.raises(GdrError, match="divisible"):
        Sasrec(n_items=10, d_model=10, n_heads=3)
    with pytest.raises(GdrError, match="unknown loss"):
        Hstu(n_items=10, loss="bpr")


# ----- exact top-K -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_top_k_is_exact_and_exclusion_keeps_k(kind: str) -> None:
    model = MODELS[kind](n_items=40, max_len=6, d_model=16, dropout=0.0, seed=2).eval()
    history = torch.tensor([[-1, -1, 3, 8, 1, 5], [2, 4, 6, 8, 10, 12], [-1, -1, -1, -1, -1, 7]])
    scores = model.scores(history)  # [3, 40]
    items, top = model.recommend(history, k=10)
    assert torch.equal(items, scores.argsort(dim=1, descending=True)[:, :10])
    assert torch.allclose(top, scores.sort(dim=1, descending=True).values[:, :10])

    exclude = torch.cat([items[:, :6], history], 1)  # the 6 best items and the history, with -1 padding
    got, got_scores = model.recommend(history, k=10, exclude=exclude)
    for row in range(3):
        banned = set(exclude[row].tolist()) - {-1}
        expected = [i for i in scores[row].argsort(descending=True).tolist() if i not in banned][:10]
        assert got[row].tolist() == expected
    assert torch.isfinite(got_scores).all()

    # fewer items left than k: the rest is -1 with score -inf
    everything_but_two = torch.arange(38).expand(3, 38)
    got, got_scores = model.recommend(history, k=5, exclude=everything_but_two)
    assert sorted(got[0, :2].tolist()) == [38, 39] and (got[:, 2:] == -1).all() and torch.isinf(got_scores[:, 2:]).all()
    got, _ = model.recommend(history, k=45)  # k above the catalogue
    assert sorted(got[0, :40].tolist()) == list(range(40)) and (got[:, 40:] == -1).all()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_run_folder_round_trip(kind: str, tmp_path: Path) -> None:
    model = MODELS[kind](n_items=25, max_len=6, d_model=8, n_layers=1, loss="sampled_softmax", seed=7).eval()
    save_model(tmp_path, model)
    loaded, _ = load_model(tmp_path)
    history = torch.tensor([[-1, 2, 3, 4, 5, 6]])
    assert torch.equal(loaded.recommend(history, k=5)[0], model.recommend(history, k=5)[0])
    assert loaded.kind == kind and loaded.init_kwargs["loss"] == "sampled_softmax"


# ----- training windows ------------------------------------------------------------------------------
def test_windows_by_hand() -> None:
    splits = splits_of([[0, 1, 2, 3, 4, 5, 6], [10, 11], [5], [20, 21, 22, 23, 24, 25]])
    got = training_windows(splits, 3)
    assert got.tolist() == [
        [0, 1, 2, 3],
        [3, 4, 5, 6],  # 6 targets, 2 full windows sharing item 3 (only an input in the second)
        [-1, -1, 10, 11],  # 1 target, padded on the left
        # a user with one training item gives no window
        [-1, 20, 21, 22],
        [22, 23, 24, 25],  # 5 targets: the earliest window is the padded one
    ]


def test_overlapping_windows_by_hand() -> None:
    got = training_windows(splits_of([[0, 1, 2, 3, 4, 5, 6], [10, 11]]), 3, stride=2)
    # windows advance 2 items; the first target of each (1 = max_len - stride) is only history there
    assert got.tolist() == [[-1, 0, 1, 2], [1, 2, 3, 4], [3, 4, 5, 6], [-1, -1, 10, 11]]
    with pytest.raises(GdrError, match="stride"):
        training_windows(splits_of([[0, 1]]), 3, stride=4)


@pytest.mark.parametrize("min_history", [0, 1, 3, 49])
def test_windows_train_every_target_once(min_history: int) -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 120, (30,), generator=gen)
    train = [torch.randint(0, 1000, (int(n),), generator=gen).tolist() for n in lengths]
    for max_len in sorted({min_history + 1, 4 + min_history, 50}):
        if max_len <= min_history:
            continue
        data = FamilyData(splits=splits_of(train), n_items=1000, max_len=max_len, seed=0)
        ex = window_examples(data, min_history)
        seq = ex["seq"]
        assert seq.shape[1] == max_len + 1 and (seq[:, -1] >= 0).all()
        pads = (seq < 0).sum(1)
        assert torch.equal(seq.lt(0), torch.arange(max_len + 1)[None, :] < pads[:, None])  # padding on the left only
        context = ex.get("context", torch.zeros(len(seq), dtype=torch.int64))
        keep = (seq[:, :-1] >= 0) & (torch.arange(max_len)[None, :] >= context[:, None])  # what the loss trains
        assert seq[:, 1:][keep].tolist() == [x for t in train for x in t[1:]]  # each target once, user then time order
        # every trained target sees min(min_history, items before it) items of history
        seen = (seq[:, :-1] >= 0).long().cumsum(1)[keep]
        before = torch.cat([torch.arange(1, len(t)) for t in train if len(t) > 1])
        assert (seen >= torch.minimum(before, torch.tensor(max(min_history, 1)))).all()
    with pytest.raises(GdrError, match="min_history"):
        window_examples(FamilyData(splits=splits_of(train), n_items=1000, max_len=min_history, seed=0), min_history)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_context_positions_are_not_trained(kind: str) -> None:
    model = MODELS[kind](n_items=12, max_len=5, d_model=8, n_layers=1, temperature=0.2, dropout=0.0, seed=1).eval()
    seq = torch.tensor([[1, 2, 3, 4, 5, 6], [-1, -1, 7, 8, 9, 10]])
    got = model.loss({"seq": seq, "context": torch.tensor([3, 3])})
    query = model.queries(seq[:, :-1])[:, 3:].flatten(0, 1)  # positions 3, 4 of both windows
    expected = softmax_loss(query, seq[:, 4:].flatten(), model.item_vectors(), 0.2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


# ----- learning ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> FamilyData:
    root = tmp_path_factory.mktemp("seqrec")
    preprocess.run(source="synthetic", data_dir=root, config=PreprocessConfig(), name="syn")
    processed = open_processed(DataPaths(root, "syn"))
    return FamilyData(splits=processed.table("splits"), n_items=processed.n_items, max_len=10, seed=0)


def popularity_ndcg(data: FamilyData, histories: torch.Tensor, targets: torch.Tensor) -> float:
    pop = Popularity(n_items=data.n_items)
    pop.fit_counts(torch.from_numpy(data.splits["train"].explode().to_numpy().astype("int64")))
    return ndcg_sum(pop.recommend(histories, k=10)[0], targets) / len(targets)


@pytest.mark.parametrize(
    ("family", "repeat"),
    [(SasrecFamily(), False), (HstuFamily(), False), (SasrecFamily(), True)],
    ids=["sasrec", "hstu", "sasrec-repeat"],
)
def test_learns_beyond_popularity(family, repeat: bool, synthetic: FamilyData, tmp_path: Path) -> None:
    cfg = family.config(d_model=32, n_layers=1, dropout=0.1, repeat_head=repeat)
    model = family.build(synthetic, cfg)
    train = family.examples(synthetic, cfg)
    val = eval_histories(synthetic.splits, "valid", synthetic.max_len, with_target=True)
    validate = make_validator(val["history"], val["target"], batch_size=1024)
    train_cfg = family.train_config(lr=3e-3, batch_size=64, max_steps=150, eval_every=50, warmup_steps=10)
    result = fit(model=model, train=train, validate=validate, cfg=train_cfg, seed=0, workdir=tmp_path / "w")
    pop = popularity_ndcg(synthetic, val["history"], val["target"])
    assert result.best_metric >= 2 * pop, (result.best_metric, pop)


def test_families_overlap_windows_by_default() -> None:
    data = FamilyData(splits=splits_of([list(range(100)), [3, 4]]), n_items=100, max_len=50, seed=0)
    for family in (SasrecFamily(), HstuFamily()):
        ex = family.examples(data, family.config())
        assert ex["seq"].shape == (5, 51) and (ex["context"] == 25).all()  # 99 targets in strides of 25, then 1
        assert set(family.examples(data, family.config(window_overlap=0.0))) == {"seq"}


def test_families_declare_their_sections() -> None:
    assert SasrecFamily.config is SasrecConfig and HstuFamily.config is HstuConfig
    assert (
        SasrecFamily.train_config is SeqrecTrainConfig
        and HstuFamily.default_max_len == 50 == SasrecFamily.default_max_len
    )
    assert not SasrecFamily.needs_ids and Sasrec.samplers == ("topk",)
    with pytest.raises(ValueError):
        SasrecConfig(loss="bpr")
