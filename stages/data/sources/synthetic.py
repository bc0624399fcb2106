"""The `synthetic` source: `stages.data.synthetic.generate` under the config's seed and sizes."""

from __future__ import annotations

from pathlib import Path

from stages.config.preprocess import PreprocessConfig
from stages.data.bundle import RawBundle, frame_bundle
from stages.data.synthetic import attributes, generate


def read(input: Path | None, *, config: PreprocessConfig, cache: Path) -> RawBundle:
    inter, items, social = generate(config.synthetic, config.seed)
    return frame_bundle(inter, items=items, social=social, origin=f"synthetic(seed={config.seed})",
                        attributes=attributes(items))
