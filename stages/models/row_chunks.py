"""Decoder sublayers run over chunks of rows (or users) at sampling time (no autograd).

On a CPU a decoder's feed-forward over tens of thousands of rows is bound by memory traffic, not
arithmetic: the hidden activations [rows, d_ff] (20 MB for cpd's 20,480 slots x 256) are written
by the first matmul, rewritten by the activation and read by the second, each time from main
memory. Run over chunks of rows whose hidden block stays in the core's cache (~1 MB), the same
operations on the same rows give bit-identical results about 2x faster (cpd's model calls; tiger's
2,560-row feed-forward fits the cache already and gains nothing). Cross-attention of each user's
slots to its history likewise runs a few users at a time as two batched matmuls (~1.3x faster than
`scaled_dot_product_attention` there, equal within float rounding). On a GPU everything runs in one chunk.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

CHUNK_BYTES = 1 << 20
"""Target size of one chunk's hidden activations (float32): within a CPU core's L2 cache."""


def residual_mlp(x: Tensor, norm: Callable[[Tensor], Tensor], up: nn.Linear, act: Callable[[Tensor], Tensor],
                 down: nn.Linear) -> Tensor:  # fmt: skip
    """x + down(act(up(norm(x)))) for x [..., d] -> [..., d], row chunk by row chunk.

    `act` may work in place (e.g. `torch.nn.functional.relu_`); its result is what `down` reads."""
    flat = x.reshape(-1, x.shape[-1])  # [R, d]
    rows = flat.shape[0] if x.device.type != "cpu" else max(1, CHUNK_BYTES // (4 * up.out_features))
    out = torch.empty_like(flat)
    for lo in range(0, flat.shape[0], rows):  # chunks of rows (not a loop over items): each chunk is vectorised
        part = flat[lo : lo + rows]
        torch.add(part, down(act(up(norm(part)))), out=out[lo : lo + rows])
    return out.view_as(x)


def user_attention(q: Tensor, kv: Tensor, keep: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(dh), masked by keep) v for each user's queries against its own keys/values.

    q: [U, h, Q, dh]; kv: [2, U, h, L, dh]; keep: [U, 1, 1, L] bool (True = attend) -> [U, h, Q, dh].
    Users run in chunks whose scores [c, h, Q, L] stay in cache."""
    u, h, nq, dh = q.shape
    length = kv.shape[3]
    users = u if q.device.type != "cpu" else max(1, CHUNK_BYTES // (4 * h * nq * length))
    out = q.new_empty(u, h, nq, dh)
    for lo in range(0, u, users):  # chunks of users, each vectorised
        hi = min(lo + users, u)
        score = torch.matmul(q[lo:hi], kv[0, lo:hi].transpose(2, 3)).mul_(dh**-0.5)  # [c, h, Q, L]
        score.masked_fill_(~keep[lo:hi], float("-inf"))
        torch.matmul(score.softmax(-1), kv[1, lo:hi], out=out[lo:hi])
    return out


def folded_attention(y: Tensor, keys: Tensor, bias: Tensor, values: Tensor, heads: int) -> Tensor:
    """Cross-attention with the query and output projections folded into each user's keys and values
    (`DigitBlock.fold`): y [U, Q, d] normed queries; keys [U, d, h·L]; bias [U, 1, h·L]; values [U, h·L, d]
    -> W_o (attention output) [U, Q, d] (without b_o). Users run in chunks whose scores stay in cache."""
    u, nq, d = y.shape
    hl = keys.shape[2]
    users = u if y.device.type != "cpu" else max(1, CHUNK_BYTES // (4 * nq * hl))
    out = y.new_empty(u, nq, d)
    for lo in range(0, u, users):  # chunks of users, each vectorised
        hi = min(lo + users, u)
        score = torch.baddbmm(bias[lo:hi], y[lo:hi], keys[lo:hi])  # [c, Q, h·L]
        prob = score.view(hi - lo, nq, heads, hl // heads).softmax(-1).view(hi - lo, nq, hl)
        torch.bmm(prob, values[lo:hi], out=out[lo:hi])
    return out
