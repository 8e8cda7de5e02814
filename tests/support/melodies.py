"""A latent set of mixes with lead stems, each lead a melody of its own (what `eval sketch` and the tone
channels are checked on): random latents, controls with a wandering pitch, voiced but for a rest."""

from __future__ import annotations

import torch

from lmdm_live.model.bundle import LMDMModel
from lmdm_live.train.latent_set import LatentSet


def melody_set(model: LMDMModel, n: int = 6, frames: int = 48, leads: bool = True) -> LatentSet:
    """n clips of `frames` frames in `model`'s token space; without `leads`, mixes alone."""
    g = torch.Generator().manual_seed(0)
    io, dim = model.dit.cfg.io_channels, model.dit.cfg.cond_token_dim
    controls = []
    for i in range(n):
        t = torch.arange(frames, dtype=torch.float32)
        pitch = 60.0 + i + 4.0 * torch.sin(t / (3.0 + i))
        voiced = (t % 12 < 9).float()
        rows = [torch.full((frames,), 100.0), t % 1, t / 4 % 1, pitch, voiced]
        rows += [torch.full((frames,), -20.0), torch.full((frames,), 1500.0)] * 2
        controls.append(torch.stack(rows))
    latents = [torch.randn(io, frames, generator=g) for _ in range(n)]
    lead = [torch.randn(io, frames, generator=g) for _ in range(n)] if leads else None
    solo = torch.randn(n, 5, dim, generator=g) if leads else None
    return LatentSet(latents, torch.randn(n, 5, dim, generator=g), controls, lead=lead, solo_tokens=solo)
