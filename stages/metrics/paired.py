"""Paired uncertainty over users: bootstrap intervals and a sign-flip permutation test.

Every run in a comparison is scored on the same users, so per-user metric values of two runs
are paired. Both procedures below keep the pairing:

* **Paired bootstrap** (intervals): draw users with replacement, the *same* draw for every run,
  and take the mean of each run's per-user values (and of the per-user differences between two
  runs) over the draw; the interval is the (1-level)/2 and (1+level)/2 percentiles of those means.
  A run against itself has per-user differences of exactly 0, so its interval is exactly [0, 0].
* **Paired permutation test** (p-values, two-sided): under "no difference" each user's difference
  a_u - b_u is as likely to have either sign, so its sign is flipped at random; the p-value is
  (1 + #{|mean of flipped| >= |observed mean|}) / (1 + permutations), never 0.

Draws are done in chunks as a [chunk, U] matrix of counts (bootstrap) or signs (permutation)
times the [U, N] value matrix, so no Python loop runs over users or resamples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gdr_cli.errors import GdrError

CHUNK_CELLS = 1 << 22
"""Largest [resamples, users] block drawn at once (4M cells, 32 MB as float64)."""


def _chunks(total: int, users: int) -> list[int]:
    size = max(1, CHUNK_CELLS // max(users, 1))
    return [min(size, total - lo) for lo in range(0, total, size)]


def bootstrap_means(values: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of each column over `samples` paired bootstrap draws of the users (rows).

    values: [U, N] float64 (one column per run or per difference). Returns [samples, N] float64.
    """
    users = values.shape[0]
    if users == 0:
        raise GdrError("no users to bootstrap over", fix="score a split with at least one user")
    out = []
    for size in _chunks(samples, users):
        draw = rng.integers(0, users, size=(size, users))  # [s, U] user indices, shared by all columns
        offsets = (np.arange(size) * users)[:, None]
        counts = np.bincount((draw + offsets).ravel(), minlength=size * users).reshape(size, users)
        out.append(counts.astype(np.float64) @ values / users)
    return np.concatenate(out, axis=0)


def percentile_interval(means: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper `level` percentile bounds of bootstrap means [samples, N] -> ([N], [N])."""
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def sign_flip_pvalues(diffs: np.ndarray, permutations: int, rng: np.random.Generator) -> np.ndarray:
    """Two-sided paired permutation p-value of mean(diffs[:, j]) != 0 for each column j.

    diffs: [U, P] float64 per-user differences between two runs. Returns [P] float64 in (0, 1].
    """
    users = diffs.shape[0]
    observed = np.abs(diffs.mean(axis=0))  # [P]
    # Ties: a flipped mean equal to the observed one (up to rounding) counts as "as extreme".
    tol = 1e-12 * np.maximum(np.abs(diffs).mean(axis=0), 1e-300)
    extreme = np.zeros(diffs.shape[1], dtype=np.int64)
    for size in _chunks(permutations, users):
        signs = rng.integers(0, 2, size=(size, users)).astype(np.float64) * 2.0 - 1.0  # [s, U] of +-1
        flipped = np.abs(signs @ diffs / users)  # [s, P]
        extreme += (flipped >= observed - tol).sum(axis=0)
    return (1.0 + extreme) / (1.0 + permutations)


@dataclass(frozen=True)
class PairedResult:
    """Run a minus run b on one metric: mean difference, its interval, and the p-value."""

    diff: float
    low: float
    high: float
    p_value: float


def check_same_users(users: dict[str, np.ndarray]) -> np.ndarray:
    """The common user order of every run's per-user vectors; runs scored on other users are an error."""
    names = list(users)
    first = users[names[0]]
    for name in names[1:]:
        other = users[name]
        if other.shape != first.shape or not np.array_equal(np.sort(other), np.sort(first)):
            missing = np.setdiff1d(first, other).size + np.setdiff1d(other, first).size
            raise GdrError(
                f"runs {names[0]!r} and {name!r} were scored on different users ({first.size:,} vs {other.size:,}, {missing:,} not shared)",
                fix="compare runs of the same dataset and split, sampled from the same processed data",
            )
    return first


def align(users: np.ndarray, values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Reorder `values` ([U] per user in `users` order) to the user order `order` (same user set)."""
    if np.array_equal(users, order):
        return values
    pos = np.argsort(users)
    return values[pos[np.searchsorted(users[pos], order)]]


def paired_compare(
    a: np.ndarray, b: np.ndarray, *, samples: int, permutations: int, level: float, seed: int
) -> PairedResult:
    """Compare two runs on one metric from their per-user values ([U] float64 each, same user order)."""
    if a.shape != b.shape:
        raise GdrError(f"paired test needs the same users for both runs ({a.size:,} vs {b.size:,} values)")
    rng = np.random.default_rng(seed)
    d = (a - b)[:, None]  # [U, 1]
    lo, hi = percentile_interval(bootstrap_means(d, samples, rng), level)
    p = sign_flip_pvalues(d, permutations, rng)
    return PairedResult(diff=float(d.mean()), low=float(lo[0]), high=float(hi[0]), p_value=float(p[0]))
