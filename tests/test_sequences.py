"""Training examples and evaluation histories (PROTOCOL.md §1), checked against hand-computed cases."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from gdr_cli.errors import GdrError
from stages.data.sequences import eval_histories, training_examples

SCHEMA = {"user": pl.Int32, "train": pl.List(pl.Int32), "valid": pl.Int32, "test": pl.Int32}


def splits(rows: list[tuple[int, list[int], int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "train": [r[1] for r in rows],
            "valid": [r[2] for r in rows],
            "test": [r[3] for r in rows],
        },
        schema=SCHEMA,
    )


@pytest.fixture
def small() -> pl.DataFrame:
    # user 7: train 10 11 12 13 14, valid 15, test 16; user 3: train 20, valid 21, test 22; user 5: train 30 31
    return splits([(7, [10, 11, 12, 13, 14], 15, 16), (3, [20], 21, 22), (5, [30, 31], 32, 33)])


def test_training_examples_every_prefix_padded_and_truncated(small: pl.DataFrame) -> None:
    ex = training_examples(small, max_len=3)
    assert ex["history"].dtype == ex["target"].dtype == ex["user"].dtype == torch.int64
    assert ex["history"].tolist() == [
        [-1, -1, 10],  # target 11
        [-1, 10, 11],  # target 12
        [10, 11, 12],  # target 13
        [11, 12, 13],  # target 14: truncated to the last 3, most recent last
        [-1, -1, 30],  # user 5: target 31 (user 3 has a single training item: no example)
    ]
    assert ex["target"].tolist() == [11, 12, 13, 14, 31]
    assert ex["user"].tolist() == [7, 7, 7, 7, 5]


def test_training_examples_never_contain_valid_or_test_items(small: pl.DataFrame) -> None:
    ex = training_examples(small, max_len=10)
    held_out = set(small["valid"].to_list()) | set(small["test"].to_list())
    assert not held_out & set(ex["history"].flatten().tolist())
    assert not held_out & set(ex["target"].tolist())
    assert ex["history"].shape == (5, 10)


def test_eval_histories_valid_uses_training_sequence(small: pl.DataFrame) -> None:
    ev = eval_histories(small, "valid", 3, with_target=True)
    assert ev["user"].tolist() == [7, 3, 5]
    assert ev["history"].tolist() == [[12, 13, 14], [-1, -1, 20], [-1, 30, 31]]
    assert ev["target"].tolist() == [15, 21, 32]


def test_eval_histories_test_appends_validation_item(small: pl.DataFrame) -> None:
    ev = eval_histories(small, "test", 3, with_target=True)
    assert ev["history"].tolist() == [[13, 14, 15], [-1, 20, 21], [30, 31, 32]]
    assert ev["target"].tolist() == [16, 22, 33]


def test_eval_histories_without_target(small: pl.DataFrame) -> None:
    for split in ("valid", "test"):
        assert set(eval_histories(small, split, 4, with_target=False)) == {"user", "history"}


def test_matches_a_plain_reference_on_random_sequences() -> None:
    rng = np.random.default_rng(0)
    rows = [
        (u, rng.integers(0, 100, rng.integers(1, 30)).tolist(), int(rng.integers(100)), int(rng.integers(100)))
        for u in range(40)
    ]
    max_len = 7
    ex = training_examples(splits(rows), max_len)
    hist, tgt = [], []
    for _, seq, _, _ in rows:
        for i in range(1, len(seq)):
            prev = seq[max(0, i - max_len) : i]
            hist.append([-1] * (max_len - len(prev)) + prev)
            tgt.append(seq[i])
    assert ex["history"].tolist() == hist
    assert ex["target"].tolist() == tgt
    ev = eval_histories(splits(rows), "test", max_len, with_target=False)
    ref = [([-1] * max_len + seq + [v])[-max_len:] for _, seq, v, _ in rows]
    assert ev["history"].tolist() == ref


def test_empty_training_sequence_gives_all_padding() -> None:
    s = splits([(0, [], 1, 2)])
    assert training_examples(s, 2)["history"].shape == (0, 2)
    assert eval_histories(s, "valid", 2, with_target=False)["history"].tolist() == [[-1, -1]]


def test_bad_split_name_is_a_user_error(small: pl.DataFrame) -> None:
    with pytest.raises(GdrError, match="unknown split"):
        eval_histories(small, "train", 3, with_target=False)


def test_bad_max_len_is_a_user_error(small: pl.DataFrame) -> None:
    with pytest.raises(GdrError, match="max_len"):
        training_examples(small, 0)


def test_missing_column_is_a_user_error(small: pl.DataFrame) -> None:
    with pytest.raises(GdrError, match="lacks column"):
        eval_histories(small.drop("valid"), "valid", 3, with_target=False)


def test_on_movielens_100k_every_training_position_once(ml100k_dir) -> None:
    from stages.data.split import leave_one_out

    inter = pl.read_csv(ml100k_dir / "ml-100k.inter", separator="\t")
    inter = inter.rename({c: c.split(":")[0] for c in inter.columns}).rename({"user_id": "user", "item_id": "item"})
    seq = inter.with_row_index("row").sort(["user", "timestamp", "row"]).select("user", "item")
    s = leave_one_out(seq, "item")
    ex = training_examples(s, 20)
    # every training item but each user's first is a target exactly once, in order; no held-out item is
    assert ex["target"].tolist() == s["train"].list.slice(1).explode().drop_nulls().to_list()
    assert len(ex["target"]) == int((s["train"].list.len() - 1).clip(0).sum())
    last = ex["history"][:, -1]
    assert (last >= 0).all()  # the item right before the target is always there
    valid = eval_histories(s, "valid", 20, with_target=True)
    test = eval_histories(s, "test", 20, with_target=True)
    assert valid["history"][:, -1].tolist() == s["train"].list.last().to_list()
    assert test["history"][:, -1].tolist() == s["valid"].to_list()
    assert torch.equal(test["history"][:, :-1], valid["history"][:, 1:])
    assert test["target"].tolist() == s["test"].to_list()


def test_null_item_inside_a_sequence_is_a_user_error() -> None:
    s = splits([(0, [1, 2], 3, 4)]).with_columns(pl.Series("train", [[1, None]], dtype=pl.List(pl.Int32)))
    with pytest.raises(GdrError, match="null items"):
        training_examples(s, 3)
