"""Experiment trackers: factory, missing extras, and both trackers' success paths (offline, no network)."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from gdr_cli.errors import GdrError
from stages.training.trackers import NoTracker, make_tracker

ROWS = [
    {"step": 1, "epoch": 0.5, "loss": 0.5, "lr": 1e-3, "val_ndcg@10": None},
    {"step": 2, "epoch": 1.0, "loss": 0.25, "lr": 2e-3, "val_ndcg@10": 0.125},
]


def test_none_tracker_and_unknown_name(tmp_path: Path) -> None:
    tracker = make_tracker("none", logdir=tmp_path / "tb")
    assert type(tracker) is NoTracker
    for row in ROWS:
        tracker.log(row)
    tracker.close()
    assert not (tmp_path / "tb").exists()  # 'none' writes nothing anywhere
    with pytest.raises(GdrError, match="unknown tracker 'mlflow'"):
        make_tracker("mlflow", logdir=tmp_path)


@pytest.mark.parametrize(
    "name,modules", [("tensorboard", ["tensorboard", "torch.utils.tensorboard"]), ("wandb", ["wandb"])]
)
def test_missing_extra_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, modules: list[str]
) -> None:
    for module in modules:  # a None entry makes `import module` fail as if the package were absent
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(GdrError) as err:
        make_tracker(name, logdir=tmp_path)
    assert f"gdr[{name}]" in err.value.line()


def test_tensorboard_records_every_scalar_at_its_step(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = make_tracker("tensorboard", logdir=tmp_path / "tb")
    for row in ROWS:
        tracker.log(row)
    tracker.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["epoch", "loss", "lr", "val_ndcg@10"]
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 0.5), (2, 0.25)]
    assert [(e.step, e.value) for e in events.Scalars("val_ndcg@10")] == [(2, 0.125)]  # None is skipped


def wandb_records(path: Path) -> list:
    """Protobuf records of an offline `run-*.wandb` file (LevelDB log: 32 KiB blocks of crc/len/type chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        room = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if room < 7 or (kind == 0 and length == 0):  # block padding
            pos += room
            continue
        chunk += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full record / last piece of one
            record = pb.Record()
            record.ParseFromString(chunk)
            out.append(record)
            chunk = b""
    return out


def test_wandb_offline_run_holds_the_rows_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # nothing leaves the machine
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    tracker = make_tracker("wandb", logdir=tmp_path / "wb", project="gdr-test", config={"train": {"lr": 0.002}})
    for row in ROWS:
        tracker.log(row)
    tracker.close()
    import wandb

    wandb.teardown()  # finish() returns before the background writer has flushed the run file
    files = list((tmp_path / "wb").glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = wandb_records(files[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    keys = ("_step", "epoch", "loss", "lr", "val_ndcg@10")
    history = [
        {k: json.loads(i.value_json) for i in r.history.item if (k := i.key or "/".join(i.nested_key)) in keys}
        for r in records
        if r.history.item
    ]
    assert history == [
        {"_step": 1, "epoch": 0.5, "loss": 0.5, "lr": 0.001},
        {"_step": 2, "epoch": 1.0, "loss": 0.25, "lr": 0.002, "val_ndcg@10": 0.125},
    ], kinds
    run = records[kinds.index("run")].run
    assert run.project == "gdr-test"
    assert json.loads({i.key: i.value_json for i in run.config.update}["train"]) == {"lr": 0.002}
