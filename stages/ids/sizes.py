"""Codebook size of each semantic level: the `--codebook` number for every level, or the `auto` rule.

The `auto` rule sizes levels from the catalogue of N items and L levels, so the first digit
groups items that share something instead of (almost) naming one item, and the later digits
still tell the items of a group apart:

    first level:   c_1 = round(sqrt(N))                        -> m = N / c_1 ~ sqrt(N) items per first code
    later levels:  c_l = ceil(m ** (2 / (L - 1)))              -> ~m^2 code combinations under each first code

each clamped to [2, min(256, N)] (256 as in TIGER). m items dropped into ~m^2 combinations
rarely share one (about half a colliding pair per group), so the collision digit stays small;
later levels of only ~m combinations ([37, 7, 7] on MovieLens 100K) left 75% of the items
sharing a semantic code. With L = 3 every level is round(sqrt(N)): MovieLens 100K (1,349 items)
gets [37, 37, 37] (~36 items per first code); a fixed 256 gives ~5, so the first digit nearly
names the item. With L = 1 the single level is round(sqrt(N)) and the collision digit numbers
the items inside each code.
"""

from __future__ import annotations

import math

AUTO_CAP = 256
"""Largest automatic codebook (TIGER's fixed size)."""


def auto_level_sizes(n: int, levels: int) -> list[int]:
    """The `auto` codebook sizes of `levels` levels for `n` entities (see the module docstring)."""
    top = max(1, min(AUTO_CAP, n))
    clamp = lambda c: max(min(2, top), min(top, c))  # noqa: E731
    first = clamp(round(math.sqrt(n)))
    if levels == 1:
        return [first]
    rest = clamp(math.ceil((n / first) ** (2 / (levels - 1)) - 1e-9))  # -1e-9: an exact power is not rounded up
    return [first] + [rest] * (levels - 1)


def level_sizes(codebook: int | str, n: int, levels: int) -> list[int]:
    """Codebook size per level: `auto_level_sizes`, or `codebook` for every level capped at the entity count."""
    if codebook == "auto":
        return auto_level_sizes(n, levels)
    return [max(1, min(int(codebook), n))] * levels
