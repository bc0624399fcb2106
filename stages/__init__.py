"""gdr's stages and the library they share.

Stage entry points (`stages/<stage>.py`) expose one keyword-only `run(...)` each; the CLI and the
tests call them. Layers below them: `data` (sources, cleaning, splits, training examples),
`ids` (item codes), `models` (recommenders), `diffusion` (schedules, corruption, losses),
`samplers` (decoding), `training` (the loop), `metrics` (ranking metrics and reports).
`config` holds every stage's Pydantic config; it imports neither torch nor polars.
"""
