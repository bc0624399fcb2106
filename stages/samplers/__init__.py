"""Decoders of item codes: one sampler per file behind a uniform `step` contract (see `base.py`).

`beam` (trie beam search) serves the autoregressive model; `cpd`, `tweedie`, `euler`, `ordered`
and `ordered-beam` serve the masked-diffusion model through `make_sampler`.
"""

from __future__ import annotations

from gdr_cli.errors import GdrError
from stages.diffusion.schedules import Schedule
from stages.samplers.base import DiffusionSampler, SamplerOptions
from stages.samplers.validity import CodeTable

DIFFUSION_SAMPLERS = ("cpd", "tweedie", "euler", "ordered", "ordered-beam")


def make_sampler(name: str, *, table: CodeTable, schedule: Schedule, options: object, k: int) -> DiffusionSampler:
    """The diffusion sampler called `name`, configured from `options` (a SampleConfig or alike)."""
    from stages.samplers.cpd import CPDSampler
    from stages.samplers.euler import EulerSampler
    from stages.samplers.ordered import OrderedBeamSampler, OrderedSampler
    from stages.samplers.tweedie import TweedieSampler

    classes = {c.name: c for c in (CPDSampler, TweedieSampler, EulerSampler, OrderedSampler, OrderedBeamSampler)}
    if name not in classes:
        raise GdrError(f"unknown diffusion sampler {name!r}", fix=f"choose one of: {', '.join(DIFFUSION_SAMPLERS)}")
    return classes[name](table, schedule, SamplerOptions.of(options), k)
