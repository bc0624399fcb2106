"""Continuous (Gaussian) diffusion over embeddings, as DiffuRec uses it.

Separate from the discrete (masking) diffusion in `stages/diffusion/`: here a clean vector x_0 is
noised as x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) ε with ε ~ N(0, I), over T discrete steps.

    schedules   the six named beta schedules (β_0 .. β_{T-1}) and ᾱ
    timesteps   training-time samplers of t: uniform, loss-aware (second-moment resampler)
    respace     fewer-step reverse chains: kept timesteps, their betas, posterior coefficients
    noise       Gaussian noise keyed by (row key, stream): reproducible whatever the batch
"""
