"""Model factory and run-folder (de)serialisation.

A run folder holds `model.safetensors` (weights and buffers) and `model.json`
(`{"kind": ..., "init_kwargs": {...}, "meta": {...}}`); `load_model` rebuilds the model from
those alone. Loading never unpickles: safetensors only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gdr_cli.errors import GdrError
from gdr_cli.io import atomic_path, atomic_write_json
from stages.models.base import Recommender
from stages.models.family import ModelFamily

WEIGHTS = "model.safetensors"
SPEC = "model.json"


def model_classes() -> dict[str, type[Recommender]]:
    """Every registered model kind -> class (imported here so the registry is the one list)."""
    from stages.models.diffkg import Diffkg
    from stages.models.diffnet import Diffnet
    from stages.models.diffurec import Diffurec
    from stages.models.diffusion import DiffusionRecommender
    from stages.models.friendpop import FriendPopularity
    from stages.models.hstu import Hstu
    from stages.models.popularity import Popularity
    from stages.models.sasrec import Sasrec
    from stages.models.tiger import Tiger

    classes: list[type[Recommender]] = [
        Popularity,
        FriendPopularity,
        Sasrec,
        Hstu,
        Diffurec,
        Tiger,
        DiffusionRecommender,
        Diffnet,
        Diffkg,
    ]
    return {c.kind: c for c in classes}


def model_families() -> dict[str, ModelFamily]:
    """Every gradient-trained model family by kind: what `train_family` needs to train it."""
    from stages.models.diffkg import DiffkgFamily
    from stages.models.diffnet import DiffnetFamily
    from stages.models.diffurec import DiffurecFamily
    from stages.models.diffusion import DiffusionFamily
    from stages.models.hstu import HstuFamily
    from stages.models.sasrec import SasrecFamily
    from stages.models.tiger import TigerFamily

    families: list[ModelFamily] = [
        SasrecFamily(),
        HstuFamily(),
        DiffurecFamily(),
        TigerFamily(),
        DiffusionFamily(),
        DiffnetFamily(),
        DiffkgFamily(),
    ]
    return {f.kind: f for f in families}


def model_family(kind: str) -> ModelFamily:
    families = model_families()
    if kind not in families:
        raise GdrError(f"unknown trainable model {kind!r}", fix=f"choose one of: {', '.join(sorted(families))}")
    return families[kind]


def build_model(kind: str, **init_kwargs: Any) -> Recommender:
    classes = model_classes()
    if kind not in classes:
        raise GdrError(f"unknown model {kind!r}", fix=f"choose one of: {', '.join(sorted(classes))}")
    return classes[kind](**init_kwargs)


def save_model(folder: Path, model: Recommender, meta: dict[str, Any] | None = None) -> None:
    """Write weights (safetensors) and the spec that rebuilds the model into `folder`."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    atomic_write_json(folder / SPEC, {"kind": model.kind, "init_kwargs": model.init_kwargs, "meta": meta or {}})


def load_model(folder: Path, device: str = "cpu") -> tuple[Recommender, dict[str, Any]]:
    """Rebuild a model from a run folder; a corrupted or mismatched checkpoint is a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        spec = json.loads((folder / SPEC).read_text())
        model = build_model(spec["kind"], **spec["init_kwargs"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GdrError(f"unreadable model spec: {exc}", where=str(folder / SPEC), fix="retrain the run") from None
    try:
        state = load_file(str(folder / WEIGHTS), device=device)
    except (OSError, SafetensorError, ValueError) as exc:
        raise GdrError(f"corrupted checkpoint: {exc}", where=str(folder / WEIGHTS), fix="retrain the run") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise GdrError(
            f"checkpoint does not fit its model: {first}", where=str(folder / WEIGHTS), fix="retrain the run"
        ) from None
    return model.to(device).eval(), spec.get("meta", {})
