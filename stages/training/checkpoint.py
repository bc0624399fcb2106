"""Resume checkpoints: one `checkpoint.pt` in the run's work folder, written atomically.

The file holds only tensors, numbers, strings, lists and dicts, so it loads with
`torch.load(..., weights_only=True)`; the caller's fingerprint (resolved config + data hashes)
is kept as JSON and must match on resume. Contents (see `loop._Trainer.save`): model, AdamW and
GradScaler state, every rank's RNG state, best state and metric, early-stopping counter, step,
epoch, position in the epoch, log rows. The learning-rate schedule is a pure function of the step
(`optim.lr_factor`), so the step is all of its state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_path

CHECKPOINT = "checkpoint.pt"


def fingerprint_json(fingerprint: dict[str, Any] | None) -> str:
    return json.dumps(fingerprint or {}, sort_keys=True, default=str)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: obj}


def fingerprint_diff(old_json: str, new_json: str) -> list[str]:
    """Dotted keys whose values differ between two fingerprints (missing on one side counts)."""
    old, new = _flatten(json.loads(old_json)), _flatten(json.loads(new_json))
    return sorted(k for k in old.keys() | new.keys() if old.get(k, ...) != new.get(k, ...))


def save_checkpoint(workdir: Path, state: dict[str, Any]) -> None:
    """Write `state` to `workdir/checkpoint.pt` atomically (the old file survives a crash)."""
    with atomic_path(workdir / CHECKPOINT) as tmp:
        torch.save(state, tmp)


def has_checkpoint(workdir: Path) -> bool:
    return (workdir / CHECKPOINT).is_file()


def load_checkpoint(workdir: Path, fingerprint: dict[str, Any] | None) -> dict[str, Any]:
    """The saved state, after checking it was made from the same config and data."""
    path = workdir / CHECKPOINT
    if not path.is_file():
        raise GdrError("no checkpoint to resume from", where=str(workdir), fix="start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["fingerprint"]
    except Exception as exc:  # any unreadable file is the same user-facing problem
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GdrError(
            f"unreadable checkpoint: {first}", where=str(path), fix="start the run again without --resume"
        ) from None
    diff = fingerprint_diff(saved, fingerprint_json(fingerprint))
    if diff:
        shown = ", ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
        raise GdrError(
            f"cannot resume: config or data changed since the checkpoint ({shown})",
            where=str(path),
            fix="resume with the original config, or start the run again without --resume",
        )
    return state
