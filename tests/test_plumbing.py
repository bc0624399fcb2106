"""Config precedence, manifests and staleness, atomic writes, CLI error lines."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import Field

from gdr_cli.app import main
from gdr_cli.config import StageConfig, parse_sets, resolve
from gdr_cli.errors import GdrError, StaleInputError
from gdr_cli.io import atomic_write_text, recover_dir, staged_dir
from gdr_cli.manifest import Manifest, check_fresh, input_ref, read_manifest, write_manifest


class Inner(StageConfig):
    lr: float = Field(1e-3, description="learning rate")
    steps: int = Field(10, description="steps")


class Outer(StageConfig):
    seed: int = Field(1, description="seed")
    name: str = Field("a", description="name")
    train: Inner = Field(default_factory=Inner)


def write_yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_precedence_defaults_file_set_flags(tmp_path: Path) -> None:
    cfg_file = write_yaml(tmp_path, "train_rec:\n  seed: 2\n  name: file\n  train: {lr: 0.5, steps: 3}\n")
    cfg = resolve(Outer, section="train_rec")
    assert (cfg.seed, cfg.name, cfg.train.lr) == (1, "a", 1e-3)
    cfg = resolve(Outer, section="train_rec", config_file=cfg_file)
    assert (cfg.seed, cfg.name, cfg.train.lr, cfg.train.steps) == (2, "file", 0.5, 3)
    cfg = resolve(Outer, section="train_rec", config_file=cfg_file, sets=["train.lr=0.25", "name=set"])
    assert (cfg.name, cfg.train.lr, cfg.train.steps) == ("set", 0.25, 3)
    cfg = resolve(Outer, section="train_rec", config_file=cfg_file, sets=["seed=3"], flags={"seed": 4, "name": None})
    assert (cfg.seed, cfg.name) == (4, "file")


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(GdrError, match=r"unknown config key 'train\.lrr'"):
        resolve(Outer, section="train_rec", sets=["train.lrr=1"])
    with pytest.raises(GdrError, match=r"unknown section 'trian_rec'"):
        resolve(Outer, section="train_rec", config_file=write_yaml(tmp_path, "trian_rec: {}\n"))
    with pytest.raises(GdrError, match="bad value for config key 'seed'"):
        resolve(Outer, section="train_rec", sets=["seed=abc"])
    with pytest.raises(GdrError, match="bad --set"):
        parse_sets(["novalue"])


def test_unknown_key_suggests_the_nearest_and_gdr_config(tmp_path: Path) -> None:
    with pytest.raises(GdrError) as err:
        resolve(Outer, section="train_rec", sets=["train.lrr=1"])
    assert "did you mean 'train.lr'? `gdr config train-rec` lists every key" in err.value.line()
    with pytest.raises(GdrError) as err:
        resolve(Outer, section="train_rec", sets=["zzz=1"])
    assert "did you mean" not in err.value.line()


@pytest.mark.parametrize(
    "stage", ["preprocess", "build-ids", "augment", "train-rec", "train-gen", "diffuse", "sample", "evaluate", "tune"]
)
def test_gdr_config_prints_a_file_that_loads_back(
    stage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gdr config STAGE -c default --set ...` prints the resolved section with comments; loaded with --config it
    resolves to the same config."""
    from gdr_cli.commands.config import _classes

    section = stage.replace("-", "_")
    sets = ["seed=7"] if "seed" in _classes()[section].model_fields else []
    capsys.readouterr()
    assert main(["config", stage, "-c", "default", *[a for s in sets for a in ("--set", s)]]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{section}:\n") and "  # " in text
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    cls = _classes()[section]
    want = resolve(cls, section=section, config_file="default", sets=sets)
    assert resolve(cls, section=section, config_file=str(path)).model_dump() == want.model_dump()


def test_gdr_config_train_prints_every_section_gdr_train_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gdr_cli.commands.config import TRAIN, _classes

    capsys.readouterr()
    assert main(["config", "train", "--set", "sample.k=7"]) == 0
    text = capsys.readouterr().out
    assert [line[:-1] for line in text.splitlines() if line and not line.startswith(" ")] == list(TRAIN)
    path = tmp_path / "train.yaml"
    path.write_text(text)
    assert resolve(_classes()["sample"], section="sample", config_file=str(path)).k == 7
    assert main(["config", "train", "--set", "diffuse.seed=1"]) == 2
    assert "unknown section 'diffuse'" in capsys.readouterr().err


def test_gdr_config_rejects_an_unknown_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no stage 'nope' has a config" in err[0] and "train-rec" in err[0]


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    with pytest.raises(GdrError) as err:
        resolve(Outer, section="train_rec", config_file=write_yaml(tmp_path, "train_rec:\n  seed: [1,\n"))
    assert "c.yaml:" in err.value.line()


def test_presets_load() -> None:
    """Every preset's every section resolves into its stage config (unknown keys would be errors)."""
    from gdr_cli.config import REPO_CONFIGS, load_config_file
    from stages.config.augment import AugmentConfig
    from stages.config.build_ids import BuildIdsConfig
    from stages.config.diffuse import DiffuseConfig
    from stages.config.evaluate import EvaluateConfig
    from stages.config.preprocess import PreprocessConfig
    from stages.config.sample import SampleConfig
    from stages.config.train_gen import TrainGenConfig
    from stages.config.train_rec import TrainRecConfig
    from stages.config.tune import TuneConfig

    classes = {"preprocess": PreprocessConfig, "build_ids": BuildIdsConfig, "augment": AugmentConfig, "train_rec": TrainRecConfig,
               "train_gen": TrainGenConfig, "diffuse": DiffuseConfig, "sample": SampleConfig, "evaluate": EvaluateConfig,
               "tune": TuneConfig}  # fmt: skip
    presets = sorted(p.stem for p in REPO_CONFIGS.glob("*.yaml"))
    assert {"tiny", "default"} <= set(presets)

    def leaves(tree: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in tree.items():
            out.update(leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    for name in presets:
        for section, values in load_config_file(name).items():
            dumped = leaves(resolve(classes[section], section=section, config_file=name).model_dump())
            for key, value in leaves(values).items():  # every value in the file reaches the config
                assert dumped[key] == value, (name, section, key)
    with pytest.raises(GdrError, match="unknown config preset"):
        resolve(Outer, section="train_rec", config_file="no-such-preset")


def make_artifact(folder: Path, stage: str, inputs: dict | None = None, payload: str = "x") -> Manifest:
    with staged_dir(folder) as tmp:
        (tmp / "table.txt").write_text(payload)
        manifest = Manifest(stage=stage, dataset="d", name=folder.name, command=f"gdr {stage} d", inputs=inputs or {})
        write_manifest(tmp, manifest)
    return read_manifest(folder, what=stage, fix="build it")


def test_stale_input_is_reported_with_rebuild_command(tmp_path: Path) -> None:
    up = make_artifact(tmp_path / "d" / "processed", "preprocess")
    down = make_artifact(
        tmp_path / "d" / "runs" / "r", "train_rec", {"processed": input_ref(tmp_path / "d" / "processed", tmp_path, up)}
    )
    check_fresh(down, tmp_path, what="run r")
    make_artifact(tmp_path / "d" / "processed", "preprocess", payload="changed")
    with pytest.raises(StaleInputError) as err:
        check_fresh(down, tmp_path, what="run r")
    assert "stale" in err.value.line() and "gdr train_rec d" in err.value.line()


def test_manifest_rejects_unknown_keys(tmp_path: Path) -> None:
    make_artifact(tmp_path / "a", "preprocess")
    data = json.loads((tmp_path / "a" / "manifest.json").read_text())
    data["surprise"] = 1
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(GdrError, match="unreadable manifest"):
        read_manifest(tmp_path / "a", what="x", fix="y")


def test_staged_dir_keeps_old_artifact_on_crash(tmp_path: Path) -> None:
    final = tmp_path / "art"
    make_artifact(final, "preprocess", payload="old")
    with pytest.raises(KeyboardInterrupt), staged_dir(final) as tmp:
        (tmp / "table.txt").write_text("half")
        raise KeyboardInterrupt
    assert (final / "table.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_recover_dir_undoes_interrupted_swap(tmp_path: Path) -> None:
    final = tmp_path / "art"
    make_artifact(final, "preprocess", payload="old")
    os.replace(final, tmp_path / ".art.old-123")  # crash between the two renames of a swap
    recover_dir(final)
    assert (final / "table.txt").read_text() == "old"


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "f.txt", "a")
    atomic_write_text(tmp_path / "f.txt", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["no-such-stage"]) == 2
    assert main(["evaluate", "ml", "--data-dir", str(tmp_path), "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("error:") == 2
    assert main(["evaluate", "ml", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gdr preprocess ml" in err[0]


def test_help_lists_stages_without_torch() -> None:
    import subprocess
    import sys

    code = "import sys; from gdr_cli.app import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")
    for stage in ("preprocess", "train-rec", "sample", "evaluate"):
        assert stage in out.stdout + out.stderr
