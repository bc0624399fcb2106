"""Bring trained artifacts of one data root into another whose processed data is byte-identical.

    python benchmarks/join_runs.py SRC_ROOT SRC_DATASET DST_ROOT DST_DATASET [--tables T,T] KIND/NAME[=NEW] ...

Used for benchmarks/family_report.md: runs trained in /tmp/gm and /tmp/seqaug_real are evaluated in one
`gdr evaluate --report` under /tmp/joint. It refuses unless every table the source's processed manifest
lists (or, with `--tables`, every named table: the ones the copied runs read) has the same content hash in
the destination's (the destination may hold more tables, e.g. kg).
Artifacts (`runs/X`, `augmented/X`, `ids/X`) are copied in the order given; in each copied manifest the
input refs are re-pointed: the source's processed data -> the destination's, an artifact copied earlier ->
its copy (the ref's old hash must match the source artifact's manifest, i.e. it was fresh there), and
`dataset` is set to the destination's. Weights, logs and model.json are copied untouched. Recommendations
are not copied: sample the copied runs again (`gdr sample`), which also checks they reproduce.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path


def sha(folder: Path) -> str:
    return hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()


def main(argv: list[str]) -> None:
    src_root, src_ds, dst_root, dst_ds, *items = argv
    tables = None
    if items and items[0] == "--tables":
        tables = [f"{t}.parquet" for t in items[1].split(",")]
        items = items[2:]
    src, dst = Path(src_root), Path(dst_root)
    src_proc, dst_proc = src / src_ds / "processed", dst / dst_ds / "processed"
    a = json.loads((src_proc / "manifest.json").read_text())["outputs"]
    b = json.loads((dst_proc / "manifest.json").read_text())["outputs"]
    differ = [f for f in (tables or a) if f not in a or b.get(f) != a[f]]
    if differ:
        sys.exit(f"processed data differ in {differ}: retrain instead")
    moved = {f"{src_ds}/processed": (sha(src_proc), f"{dst_ds}/processed", sha(dst_proc))}
    for item in items:
        rel, _, new = item.partition("=")
        kind = rel.split("/")[0]
        target = f"{kind}/{new}" if new else rel
        origin, copy = src / src_ds / rel, dst / dst_ds / target
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(origin, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        for role, ref in manifest["inputs"].items():
            if ref["path"] not in moved:
                sys.exit(f"{rel}: input {role} {ref['path']} was not copied before it")
            old_hash, path, new_hash = moved[ref["path"]]
            if ref["sha256"] != old_hash:
                sys.exit(f"{rel}: input {role} {ref['path']} was stale in the source")
            ref.update(path=path, sha256=new_hash)
        manifest["dataset"] = dst_ds
        if new:
            manifest["name"] = new
        (copy / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        moved[f"{src_ds}/{rel}"] = (sha(origin), f"{dst_ds}/{target}", sha(copy))
        print(f"{src}/{src_ds}/{rel} -> {copy}")


if __name__ == "__main__":
    main(sys.argv[1:])
