"""The shared training loop of every gradient-trained recommender.

`loop.fit` (AdamW, warm-up + cosine decay, clipping, AMP, validation with early stopping,
budget, resume, DDP), `validation.make_validator` (sharded NDCG@10 via `model.recommend`),
`run.save_run` (the run folder both model stages write), `checkpoint` (resume state),
`optim` (parameter groups and the learning-rate schedule), `distributed` (torchrun helpers).
"""
