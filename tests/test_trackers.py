"""Experiment trackers: factory, missing extras, and the loop's rows reaching a tracker."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from gdr_cli.errors import GdrError
from stages.training.trackers import NoTracker, make_tracker


def test_none_tracker_and_unknown_name(tmp_path: Path) -> None:
    assert isinstance(make_tracker("none", logdir=tmp_path), NoTracker)
    with pytest.raises(GdrError, match="unknown tracker 'mlflow'"):
        make_tracker("mlflow", logdir=tmp_path)


@pytest.mark.parametrize("name,module", [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_missing_extra_is_one_line(tmp_path: Path, name: str, module: str) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(GdrError) as err:
        make_tracker(name, logdir=tmp_path)
    assert f"gdr[{name}]" in err.value.line()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard extra not installed")
def test_tensorboard_writes_event_file(tmp_path: Path) -> None:
    tracker = make_tracker("tensorboard", logdir=tmp_path / "tb")
    tracker.log({"step": 1, "loss": 0.5, "val_ndcg@10": None})
    tracker.close()
    assert any((tmp_path / "tb").glob("events.out.tfevents.*"))
