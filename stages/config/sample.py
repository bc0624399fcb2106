"""Config of `gdr sample`: how many items, and how each sampler searches.

Most options belong to some samplers only (`APPLIES`); an option given on the command line
(flag or --set) that the chosen model's sampler does not read is an error naming the ones it
does (`check_applicable`). A config file's `sample:` section is shared by every model, so its
keys are not checked.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gdr_cli.config import StageConfig
from gdr_cli.errors import GdrError

DIFFUSION = ("cpd", "tweedie", "euler", "ordered", "ordered-beam")
STOCHASTIC = ("tweedie", "euler", "ordered")


class SampleConfig(StageConfig):
    split: Literal["valid", "test"] = Field(
        "test",
        description="Users' split to recommend for: 'valid' (history = training items) or 'test' (training + validation item).",
    )
    view: Literal["item", "social"] | None = Field(
        None,
        description="View to recommend in; None = the run's own (a run trained with --view social recommends friends: "
        "never the user themself, and under --exclude-history not their training friends). A view other than the run's "
        "is an error.",
    )
    k: int = Field(20, ge=1, description="Items per user; 20 covers every default metric cut-off (@1, 5, 10, 20).")
    max_len: int | None = Field(
        None, ge=1, description="History length fed to the model; None = the length the run was trained with."
    )
    batch_size: int = Field(256, ge=1, description="Users decoded together; larger is faster until memory runs out.")
    sampler: str | None = Field(
        None,
        description="Decoding algorithm; None = the model's default (beam for tiger, cpd for diffusion; diffusion also "
        "has tweedie, euler, ordered, ordered-beam).",
    )
    beam: int = Field(
        20,
        ge=1,
        description="Beam width (beam; cpd and ordered-beam: beams kept after every step but the first) or samples per "
        "user (tweedie, euler, ordered); at least k is used. 20 as in TIGER (DIFF_GRM decodes cpd with 512).",
    )
    first_beam: int | None = Field(
        None,
        ge=1,
        description="cpd/ordered-beam: beams kept after the first step; None = max(beam, k). DIFF_GRM: 256 (with beam 512).",
    )
    digits_per_step: int | None = Field(
        None,
        ge=1,
        description="cpd: code digits filled per step (2 halves the steps of a 4-digit code; the code length scores every "
        "item in one model call); None = the run's own, chosen on validation by `gdr diffuse` "
        "(diffuse.validation.choose_digits_per_step), or 1 for a run without one.",
    )
    whole_code: Literal["exact", "beam"] | None = Field(
        None,
        description="cpd with the whole code in one step (one model call per user): 'exact' scores every item by the sum "
        "of its digits' log-probs, so its cost follows the catalogue (~81 users/s at 1M items); 'beam' finds the top of "
        "the same scores by a trie beam over the digits (width max(beam, k)), whatever the catalogue size (3,356 users/s "
        "at 1M items in the full pipeline, 3.4x tiger's beam; benchmarks/bench_scale.py), and can miss an item whose first digits score low "
        "(MovieLens 100K: the exact lists for 77% of users at width 20, 100% at 64, NDCG@10 within 0.0003). None = the "
        "run's own choice on validation (`gdr diffuse`), else exact. 'beam' without --digits-per-step implies the whole "
        "code.",
    )
    renormalize: bool = Field(
        False,
        description="Diffusion samplers: --renormalize scores each digit by its log-prob renormalised over the digits some "
        "allowed item still has (a partial code only one item has then scores 0 for its remaining digits); off (the "
        "default, as DIFF_GRM and the tiger beam) a digit scores its raw log-prob, so a finished code scores the model's "
        "log-probability of it, which is what the repeat head mixes with its history items: raw scores gained Last.fm 2K "
        "validation NDCG@10 on 4 of 4 runs (+0.005 on average) and were level on MovieLens 100K (-0.0006) "
        "(benchmarks/ablation_quality.md, round 9).",
    )
    steps: int = Field(8, ge=1, description="tweedie/euler: number of τ-leaping steps from t=1 to t=0.")
    sample_steps: int | None = Field(
        None,
        ge=1,
        description="diffurec (denoise): reverse diffusion steps of the respaced schedule; unset = the run's own sample_steps.",
    )
    strategy: Literal["direct", "top_k", "top_p"] = Field(
        "direct",
        description="tweedie/euler/ordered: draw each digit from the whole tempered prediction ('direct'; for ordered, "
        "RADD's ancestral sampling), from its top_k digits, or from its top_p nucleus.",
    )
    top_k: int = Field(10, ge=1, description="strategy top_k: sample among the k most likely digits.")
    top_p: float = Field(
        0.9, gt=0, le=1, description="strategy top_p: sample from the smallest digit set with this much probability."
    )
    temperature: float = Field(
        1.0,
        gt=0,
        description="tweedie/euler/ordered: softmax temperature of the draws (1 = the model's own distribution).",
    )
    order: list[int] | Literal["random"] | None = Field(
        None,
        description="ordered/ordered-beam: digit fill order, e.g. [3, 0, 1, 2]; 'random' (ordered only) = a fresh uniform "
        "order per sample, as RADD without a given order; None = left to right.",
    )
    prefix: dict[int, int] | None = Field(
        None,
        description="Diffusion samplers: digits fixed in advance as {position: token}, never resampled; None = none.",
    )
    constrained: bool = Field(
        True,
        description="Keep only (prefixes of) real item codes: tiger's trie, the diffusion samplers' code table. "
        "--no-constraint searches every code, to measure what the constraint buys: codes that name no item are written "
        "as null items and counted in evaluate's invalid_rate (diffusion samplers: one search, history items dropped "
        "after it, so a list can hold fewer than k items).",
    )
    use_cache: bool = Field(
        True, description="tweedie/euler: reuse logits of rows whose tokens did not change (fewer model calls)."
    )
    exclude_history: bool = Field(
        False,
        description="Drop items in the user's history from the list (RecBole's protocol); off = the TIGER/HSTU protocol.",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Sampling device: auto = cuda if available else cpu; or cpu, cuda, cuda:N.",
    )
    seed: int = Field(
        42,
        description="Seed of the stochastic samplers (tweedie, euler, ordered); a user's noise is keyed by (seed, user ID), "
        "so the lists depend on neither --batch-size nor the other users.",
    )


APPLIES: dict[str, tuple[str, ...]] = {
    "beam": ("beam", *DIFFUSION),
    "first_beam": ("cpd", "ordered-beam"),
    "digits_per_step": ("cpd",),
    "whole_code": ("cpd",),
    "renormalize": DIFFUSION,
    "steps": ("tweedie", "euler"),
    "sample_steps": ("denoise",),
    "strategy": STOCHASTIC,
    "top_k": STOCHASTIC,
    "top_p": STOCHASTIC,
    "temperature": STOCHASTIC,
    "order": ("ordered", "ordered-beam"),
    "prefix": DIFFUSION,
    "use_cache": ("tweedie", "euler"),
    "constrained": ("beam", *DIFFUSION),
}
"""Sampler-specific options and the samplers that read them; every other option applies to all."""


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def check_applicable(config: SampleConfig, given: set[str], sampler: str, model: str = "") -> None:
    """Reject options in `given` (keys set explicitly) that `sampler` does not read; one GdrError line
    naming them and the options that do apply. top_k / top_p also need the matching strategy."""
    wrong = [key for key in APPLIES if key in given and sampler not in APPLIES[key]]
    for key in ("top_k", "top_p"):
        if key in given and key not in wrong and config.strategy != key:
            raise GdrError(
                f"{flag_name(key)} applies only with --strategy {key} (got strategy {config.strategy!r})",
                fix=f"add --strategy {key}, or drop {flag_name(key)}",
            )
    if wrong:
        own = [flag_name(key) for key in APPLIES if sampler in APPLIES[key]]
        what = ", ".join(flag_name(key) for key in wrong)
        raise GdrError(
            f"{what} {'does' if len(wrong) == 1 else 'do'} not apply to sampler {sampler!r}"
            + (f" of model {model!r}" if model else ""),
            fix=f"options of {sampler}: {', '.join(own) if own else 'none beyond the common ones (k, split, batch size, ...)'}",
        )
