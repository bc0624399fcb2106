"""Stage configs and their precedence: defaults < YAML file < `--set key=value` < typed flags.

Each stage has a Pydantic model (in `stages/config/`) whose fields carry the defaults and
their one-line explanations (which are also the `--help` text). Unknown keys are rejected
everywhere: in YAML sections, in `--set`, and in nested sections.

A YAML config file holds one section per stage, named like the stage's module:

    train_rec:
      max_len: 20
      train: {lr: 1.0e-3, batch_size: 256}
"""

from __future__ import annotations

import difflib
import textwrap
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from gdr_cli.errors import GdrError

SECTIONS = ("preprocess", "build_ids", "augment", "train_rec", "train_gen", "diffuse", "sample", "evaluate", "tune")
"""Stage sections a config file may contain."""

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class StageConfig(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


C = TypeVar("C", bound=BaseModel)


def find_config_file(name: str) -> Path:
    """A path, or a preset name looked up as `configs/<name>.yaml` (cwd first, then the repo)."""
    direct = Path(name)
    if direct.suffix in (".yaml", ".yml") or direct.exists():
        if not direct.exists():
            raise GdrError(
                "config file not found", where=name, fix="give a path to a YAML file or a preset name from configs/"
            )
        return direct
    for folder in (Path("configs"), REPO_CONFIGS):
        cand = folder / f"{name}.yaml"
        if cand.exists():
            return cand
    presets = sorted(p.stem for p in REPO_CONFIGS.glob("*.yaml")) if REPO_CONFIGS.exists() else []
    raise GdrError(f"unknown config preset {name!r}", fix=f"use a YAML path or one of: {', '.join(presets) or 'none'}")


def load_config_file(name: str) -> dict[str, Any]:
    path = find_config_file(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise GdrError(
            f"invalid YAML: {getattr(exc, 'problem', exc)}", where=where, fix="fix the YAML syntax"
        ) from None
    if not isinstance(data, dict):
        raise GdrError("config file must be a mapping of stage sections", where=str(path))
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise GdrError(
            f"unknown section {unknown[0]!r} in config file",
            where=str(path),
            fix=f"sections are: {', '.join(SECTIONS)}",
        )
    return data


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """`["train.lr=1e-3", "max_len=50"]` -> `{"train": {"lr": 0.001}, "max_len": 50}` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise GdrError(f"bad --set {item!r}", fix="write --set key=value, e.g. --set train.lr=1e-3")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GdrError(f"conflicting --set keys at {key!r}")
        node[parts[-1]] = value
    return out


def split_sections(sets: list[str] | None) -> dict[str, list[str]]:
    """--set keys prefixed by their section (commands reading several: `gdr train`) -> {section: [key=value, ...]}."""
    out: dict[str, list[str]] = {}
    for item in sets or []:
        head, _, rest = item.partition(".")
        out.setdefault(head, []).append(rest)
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def nest_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """Typed flags as `{"train.lr": 1e-3, "seed": None}` -> nested dict without the unset (None) ones."""
    out: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def resolve(
    cls: type[C],
    *,
    section: str,
    config_file: str | None = None,
    sets: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> C:
    """Build `cls` from defaults < `config_file[section]` < `sets` < `flags`, rejecting unknown keys."""
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {section!r}")
    layer: dict[str, Any] = {}
    source = "defaults"
    if config_file:
        data = load_config_file(config_file)
        layer = data.get(section) or {}
        if not isinstance(layer, dict):
            raise GdrError(f"section {section!r} must be a mapping", where=config_file)
        source = str(find_config_file(config_file))
    layer = deep_merge(layer, parse_sets(sets))
    layer = deep_merge(layer, nest_flags(flags or {}))
    try:
        return cls.model_validate(layer)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or section
        if err["type"] == "extra_forbidden":
            what = f"unknown config key {key!r} in section {section!r}"
            near = difflib.get_close_matches(key, all_keys(cls), n=1, cutoff=0.6)
            fix = (
                f"did you mean {near[0]!r}? " if near else ""
            ) + f"`gdr config {section.replace('_', '-')}` lists every key"
        else:
            what = f"bad value for config key {key!r}: {err['msg']}"
            fix = "fix the value in the config file, --set or flag"
        raise GdrError(what, where=source if config_file else "--set/flags", fix=fix) from None


def field_help(cls: type[BaseModel], path: str) -> str:
    """The description and default of a (possibly nested, dotted) config field, for `--help`."""
    model: Any = cls
    parts = path.split(".")
    for part in parts[:-1]:
        model = model.model_fields[part].annotation
    info = model.model_fields[parts[-1]]
    default = info.get_default(call_default_factory=True)
    text = info.description or ""
    return f"{text} (config: {path}; default: {default})"  # not [..]: typer renders help as rich markup


def all_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted config key of `cls`, nested sections included: ["seed", "train.lr", ...]."""
    out = []
    for name, info in cls.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += [f"{prefix}{name}", *all_keys(sub, f"{prefix}{name}.")]
        else:
            out.append(f"{prefix}{name}")
    return out


def render_config(cfg: BaseModel, section: str, width: int = 100) -> str:
    """The resolved `cfg` as a config file with one `section:` (loadable by `--config`), each key preceded by its
    description as a comment: what `gdr config STAGE` prints."""
    lines = [f"{section}:"]
    _render(cfg, cfg.model_dump(mode="json"), 1, width, lines)
    return "\n".join(lines) + "\n"


def _render(model: BaseModel, values: dict[str, Any], depth: int, width: int, lines: list[str]) -> None:
    pad = "  " * depth
    for name, info in type(model).model_fields.items():
        if info.description:
            lines += textwrap.wrap(info.description, width - len(pad) - 2, initial_indent=f"{pad}# ",
                                   subsequent_indent=f"{pad}# ")  # fmt: skip
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _render(value, values[name], depth + 1, width, lines)
        else:
            lines.append(f"{pad}{name}: {_scalar(values[name])}")


def _scalar(value: Any) -> str:
    """One YAML value on one line: 20, null, auto, [1, 5, 10], {a: 1}."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...")  # a bare scalar document ends with an explicit end marker
