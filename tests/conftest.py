"""Shared fixtures: the real data in ../shared/data (skipped when absent), GPU marker, quiet output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
"""`../shared/data` next to the repository checkout (PROTOCOL.md §5)."""

os.environ.setdefault("GDR_QUIET", "1")
# Test models are tiny: one BLAS thread per process is faster than two fighting over 2 cores,
# and subprocesses (torchrun tests) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared/data is not available")
    return SHARED


@pytest.fixture(scope="session")
def ml100k_dir(shared_data: Path) -> Path:
    path = shared_data / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        pytest.skip("ml-100k not in ../shared/data")
    return path


@pytest.fixture(scope="session")
def lastfm_dir(shared_data: Path) -> Path:
    path = shared_data / "hetrec2011-lastfm-2k"
    if not (path / "user_friends.dat").exists():
        pytest.skip("hetrec2011-lastfm-2k not in ../shared/data")
    return path
