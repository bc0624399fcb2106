"""Training device and mixed-precision mode from the `train.device` / `train.amp` settings."""

from __future__ import annotations

import torch

from gdr_cli.errors import GdrError


def resolve_device(name: str, local_rank: int = 0, key: str = "train.device") -> torch.device:
    """'auto' = cuda if available else cpu; under torchrun each process takes GPU `local_rank`.
    `key` names the setting in error messages (e.g. 'sample.device')."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise GdrError(f"{key}={name} but no CUDA device is available", fix=f"use {key}=auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise GdrError(f"CUDA device {index} does not exist", fix=f"use an index below {torch.cuda.device_count()}")
        return torch.device("cuda", index)
    return torch.device("cpu")


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = full precision). fp16 uses a GradScaler; it needs CUDA."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16" and device.type != "cuda":
        raise GdrError("train.amp=fp16 needs a CUDA device", fix="use train.amp=bf16 or off on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16
