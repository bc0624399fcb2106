"""Sparse per-user item sets (`ItemSets`) answer what the dense [users, items] masks they replaced answered."""

from __future__ import annotations

import torch

from stages.samplers.exclusion import ItemSets, item_sets


def lists_and_mask(seed: int, users: int = 7, items: int = 30, m: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Random padded item lists [users, m] (repeats and -1 padding) and the dense mask they mean."""
    gen = torch.Generator().manual_seed(seed)
    lists = torch.randint(-1, items, (users, m), generator=gen)
    lists[2] = -1  # a user with nothing excluded
    mask = torch.zeros(users, items, dtype=torch.bool)
    for u, row in enumerate(lists.tolist()):
        for i in row:
            if i >= 0:
                mask[u, i] = True
    return lists, mask


def test_item_sets_equal_the_dense_mask() -> None:
    lists, mask = lists_and_mask(0)
    sets = ItemSets.from_lists(lists, 30)
    assert torch.equal(sets.dense(), mask)
    assert torch.equal(ItemSets.from_mask(mask).keys, sets.keys)
    user, item = sets.pairs()
    assert torch.equal(torch.stack([user, item]), torch.stack(mask.nonzero(as_tuple=True)))
    assert sets.ptr().tolist() == [0, *mask.sum(dim=1).cumsum(0).tolist()]
    u = torch.randint(0, 7, (50,), generator=torch.Generator().manual_seed(1))
    i = torch.randint(-1, 30, (50,), generator=torch.Generator().manual_seed(2))
    assert torch.equal(sets.contains(u, i), (i >= 0) & mask[u, i.clamp(min=0)])
    assert not ItemSets.empty(3, 30).contains(torch.tensor([0, 2]), torch.tensor([1, 5])).any()


def test_lists_are_each_users_items_padded() -> None:
    lists, mask = lists_and_mask(5)
    out = ItemSets.from_lists(lists, 30).lists()  # [7, longest]
    assert out.shape == (7, int(mask.sum(1).max()))
    for row, want in zip(out.tolist(), mask, strict=True):
        assert [i for i in row if i >= 0] == want.nonzero().squeeze(1).tolist()  # ascending, then -1 padding
        assert row[len([i for i in row if i >= 0]) :] == [-1] * (len(row) - int(want.sum()))
    assert ItemSets.empty(2, 30).lists().tolist() == [[-1], [-1]]


def test_rows_slice_and_add_follow_the_mask() -> None:
    lists, mask = lists_and_mask(3)
    sets = ItemSets.from_lists(lists, 30)
    index = torch.tensor([5, 2, 0, 5])  # any order, repeats
    assert torch.equal(sets.rows(index).dense(), mask[index])
    assert torch.equal(sets.slice(2, 6).dense(), mask[2:6])
    assert sets.slice(3, 3).n_users == 0 and len(sets.slice(3, 3).keys) == 0
    user, item = torch.tensor([0, 0, 4, 6]), torch.tensor([1, 1, 29, 0])
    more = sets.add(user, item)
    expect = mask.clone()
    expect[user, item] = True
    assert torch.equal(more.dense(), expect) and torch.equal(sets.dense(), mask)  # the original is unchanged


def test_a_dense_mask_in_the_state_is_converted_once() -> None:
    _, mask = lists_and_mask(4)
    extra: dict = {"exclude": mask}
    first = item_sets(extra, "exclude")
    assert extra["exclude"] is first and item_sets(extra, "exclude") is first  # converted once, then reused
    assert torch.equal(first.dense(), mask) and item_sets(extra, "invalid") is None
