"""`gdr diffuse`: train the masked discrete-diffusion recommender and write a run folder.

Reads the processed splits and an ID set, trains with the shared flow (`stages/training/flow.py`:
validation NDCG@10 with the `cpd` sampler, early stopping, budget, resume, DDP), and reports the
exact any-order likelihood bound on the validation targets (nats per item and perplexity per
digit) in the manifest (`DiffusionFamily.stats`).
"""

from __future__ import annotations

from pathlib import Path

from gdr_cli.manifest import Manifest, check_fresh
from gdr_cli.paths import DataPaths
from stages.config.diffuse import DiffuseConfig
from stages.inputs import open_processed
from stages.models.registry import model_family


def run(
    *, dataset: str, data_dir: Path, config: DiffuseConfig, run_name: str | None = None, resume: bool = False
) -> Manifest | None:
    """Train on `dataset` with ID set `config.ids`; returns the manifest of `runs/<run_name>` (None on non-primary ranks)."""
    from stages.training.flow import TrainRequest, train_family

    paths = DataPaths(data_dir, dataset)
    processed = open_processed(paths)
    check_fresh(processed.manifest, paths.root, what="processed data")
    request = TrainRequest(
        stage="diffuse", family=model_family("diffusion"), section=config, train=config.train, stage_config=config,
        ids=config.ids, max_len=config.max_len, seed=config.seed, name=run_name or "diffusion", resume=resume,
        view=config.view, train_split=config.train_split,
    )  # fmt: skip
    return train_family(paths, processed, request)
