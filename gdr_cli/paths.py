"""Where every artifact lives under the data root (PROTOCOL.md §2).

<root>/raw/<dataset>/                 raw inputs and downloads
<root>/<dataset>/processed/           preprocess: interactions, items, users, splits, social
<root>/<dataset>/ids/<ids>/           build-ids: one code per item (or user)
<root>/<dataset>/augmented/<name>/    augment: an augmented training split (splits.parquet)
<root>/<dataset>/runs/<run>/          train-rec / diffuse: checkpoint + config + curves
<root>/<dataset>/runs/.<run>.work/    a run in progress (resume checkpoints)
<root>/<dataset>/recs/<run>/<split>/  sample: top-K table
<root>/<dataset>/metrics/<run>/<split>/ evaluate: metrics.json
<root>/<dataset>/reports/             evaluate: comparison tables and plots
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from gdr_cli.errors import GdrError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_name(kind: str, name: str) -> str:
    """Reject names that would escape the data root or be awkward on disk."""
    if not _NAME.match(name or ""):
        raise GdrError(
            f"invalid {kind} name {name!r}",
            fix="use letters, digits and . _ + - (starting with a letter or digit)",
        )
    return name


@dataclass(frozen=True)
class DataPaths:
    root: Path
    dataset: str

    def __post_init__(self) -> None:
        check_name("dataset", self.dataset)

    @property
    def raw(self) -> Path:
        return self.root / "raw" / self.dataset

    @property
    def home(self) -> Path:
        return self.root / self.dataset

    @property
    def processed(self) -> Path:
        return self.home / "processed"

    def ids(self, name: str) -> Path:
        return self.home / "ids" / check_name("ID set", name)

    def augmented(self, name: str) -> Path:
        return self.home / "augmented" / check_name("augmented split", name)

    def run(self, name: str) -> Path:
        return self.home / "runs" / check_name("run", name)

    def work(self, name: str) -> Path:
        """Scratch folder of a run in progress; survives interruption so `--resume` can continue."""
        return self.home / "runs" / f".{check_name('run', name)}.work"

    def recs(self, name: str, split: str) -> Path:
        return self.home / "recs" / check_name("run", name) / split

    def metrics(self, name: str, split: str) -> Path:
        return self.home / "metrics" / check_name("run", name) / split

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    def rel(self, path: Path) -> str:
        """`path` relative to the data root, as recorded in manifests."""
        try:
            return str(path.resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)
