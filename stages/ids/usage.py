"""How evenly codes are used: per-level counts, entropy, and the `usage.png` plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gdr_cli.io import atomic_path


def level_usage(codes: np.ndarray, vocab_sizes: list[int]) -> list[dict[str, float | int]]:
    """Per digit of codes [N, D]: used codes, vocab size, entropy in bits (and its maximum log2 vocab)."""
    out = []
    for d, size in enumerate(vocab_sizes):
        counts = np.bincount(codes[:, d], minlength=size)
        p = counts[counts > 0] / max(codes.shape[0], 1)
        entropy = float(-(p * np.log2(p)).sum()) if p.size else 0.0
        out.append(
            {
                "digit": d,
                "used": int((counts > 0).sum()),
                "size": int(size),
                "entropy_bits": round(entropy + 0.0, 4),
                "max_entropy_bits": round(float(np.log2(size)) if size > 0 else 0.0, 4),
            }
        )
    return out


def plot_usage(path: Path, codes: np.ndarray, vocab_sizes: list[int], title: str) -> None:
    """Step-bar plot per digit of how many entities use each code (sorted, most used first) -> PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = level_usage(codes, vocab_sizes)
    d = len(vocab_sizes)
    fig, axes = plt.subplots(1, d, figsize=(3.2 * d, 2.8), squeeze=False)
    for ax, s, size in zip(axes[0], stats, vocab_sizes, strict=True):
        counts = np.sort(np.bincount(codes[:, s["digit"]], minlength=size))[::-1]
        ax.stairs(counts, np.arange(size + 1), fill=True, color="tab:blue")  # one artist, fast for 256+ codes
        last = " (collision digit)" if s["digit"] == d - 1 else ""
        ax.set_title(
            f"digit {s['digit']}{last}\nused {s['used']}/{size}, H={s['entropy_bits']:.2f}/{s['max_entropy_bits']:.2f} bits",
            fontsize=8,
        )
        ax.set_xlabel("code (by usage)", fontsize=8)
        ax.set_ylabel("count", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.3 / d, right=1 - 0.05 / d, bottom=0.18, top=0.72, wspace=0.35)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
