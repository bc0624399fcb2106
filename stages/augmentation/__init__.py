"""Training-data augmentation: `diffuasr` (the DiffuASR diffusion model, generation, nearest-item mapping) and
`splits` (the training splits a model may train on: base or `augmented/<name>`)."""
