"""pyproject.toml declares what the code imports, in versions that have what the code uses."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
OWN = {"gdr_cli", "stages"}


def declared() -> dict[str, str]:
    """Normalised distribution name -> requirement, over the dependencies and every extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {norm(re.match(r"[A-Za-z0-9_.-]+", r).group()): r for r in reqs}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, str]:
    """Top-level third-party module -> first file importing it, over the library code."""
    found: dict[str, str] = {}
    for path in sorted([*ROOT.glob("stages/**/*.py"), *ROOT.glob("gdr_cli/**/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top not in OWN and top not in sys.stdlib_module_names and top != "__future__":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    dists = packages_distributions()
    have = declared()
    missing = []
    for module, where in imported_modules().items():
        names = {norm(d) for d in dists.get(module, [module])}
        if not names & set(have):
            missing.append(f"{module} ({where})")
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_transformers_lower_bound_has_the_t5_output_scaling_switch() -> None:
    """tiger reads T5Config.scale_decoder_outputs: absent in 4.x; 5.0.0 ignores tie_word_embeddings=False."""
    req = declared()["transformers"]
    low = re.search(r">=\s*([0-9.]+)", req)
    assert low is not None, req
    assert tuple(int(p) for p in low.group(1).split(".")) >= (5, 1)
    from transformers import T5Config

    assert T5Config(tie_word_embeddings=False).scale_decoder_outputs is False
    assert T5Config().scale_decoder_outputs is True
