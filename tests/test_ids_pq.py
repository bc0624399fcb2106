"""Product quantisation: codes recover planted product cells, the variance deal balances blocks, the OPQ
rotation stays orthogonal and lowers distortion where PQ's axes are wrong, and the method refuses
embeddings with fewer dimensions than levels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdr_cli.errors import GdrError
from stages.config.build_ids import BuildIdsConfig
from stages.ids.kmeans import KMeansOptions
from stages.ids.methods import make_method
from stages.ids.pq import balanced_blocks, product_quantize

PLAIN = KMeansOptions(iters=30, balanced=False)


def test_balanced_blocks_deal_largest_first_to_the_smallest_product() -> None:
    variance = torch.tensor([1.0, 8.0, 4.0, 2.0])
    blocks = balanced_blocks(variance, 2)
    # 8 -> block 0; 4 -> block 1 (empty); 2 -> block 1 (log 4 < log 8), now full; 1 -> block 0: products 8 and 8
    assert [b.tolist() for b in blocks] == [[0, 1], [2, 3]]
    sizes = [len(b) for b in balanced_blocks(torch.rand(7), 3)]
    assert sorted(sizes) == [2, 2, 3] and sum(sizes) == 7


def test_codes_recover_planted_product_cells() -> None:
    # 4 independent binary dimensions of distinct spread (so PCA's axes are the data's): 16 cells,
    # 10 points each; any 2 + 2 split of the dimensions holds 4 clusters per block
    g = torch.Generator().manual_seed(0)
    bits = (torch.arange(16)[:, None] >> torch.arange(4)) & 1  # [16, 4]
    centre = (bits * torch.tensor([10.0, 6.0, 3.0, 1.5])).repeat_interleave(10, 0)  # [160, 4]
    x = centre + 0.1 * torch.randn(160, 4, generator=g)
    a, b = torch.arange(16) // 4, torch.arange(16) % 4
    res = product_quantize(x, [4, 4], PLAIN, torch.Generator().manual_seed(1), rotation_iters=4)
    assert res.codes.shape == (160, 2) and int(res.codes.max()) == 3
    # 16 cells from 4 + 4 centroids: every cell gets its own code and every code holds one cell
    cell = (a * 4 + b).repeat_interleave(10).tolist()
    code = (res.codes[:, 0] * 4 + res.codes[:, 1]).tolist()
    assert len(set(code)) == 16 and len(set(zip(cell, code, strict=True))) == 16
    assert res.distortion[-1] < 0.1  # the planted noise only: 4 dims x 0.01 per point


def test_opq_rotation_is_orthogonal_and_lowers_distortion() -> None:
    # an anisotropic Gaussian with its axes randomly mixed: the Procrustes updates must find a better rotation
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 4, generator=g) * torch.tensor([3.0, 3.0, 0.3, 0.3])
    x = x @ torch.linalg.qr(torch.randn(4, 4, generator=g)).Q  # a random orthogonal mix of the axes
    res = product_quantize(x, [6, 6], PLAIN, torch.Generator().manual_seed(1), rotation_iters=8)
    r = res.rotation
    assert torch.allclose(r.T @ r, torch.eye(4), atol=1e-4)
    assert res.distortion[-1] < res.distortion[0] and len(res.distortion) == 9
    assert all(math.isfinite(d) for d in res.distortion)


def test_pq_is_a_function_of_the_seed() -> None:
    x = torch.randn(200, 8, generator=torch.Generator().manual_seed(3))
    one = product_quantize(x, [5, 5, 5], PLAIN, torch.Generator().manual_seed(9), rotation_iters=3)
    two = product_quantize(x, [5, 5, 5], PLAIN, torch.Generator().manual_seed(9), rotation_iters=3)
    assert torch.equal(one.codes, two.codes) and one.distortion == two.distortion


def test_pq_method_refuses_fewer_dimensions_than_levels() -> None:
    method = make_method("pq", BuildIdsConfig(method="pq", levels=4, codebook=4))
    with pytest.raises(GdrError, match="at least one embedding dimension per level") as err:
        method.assign(30, np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32))
    assert "build_ids.embed.dim" in err.value.line()
    codes, sizes = method.assign(30, np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32))
    assert codes.shape == (30, 4) and sizes == [4, 4, 4, 4] and method.stats["pq_distortion_end"] > 0
