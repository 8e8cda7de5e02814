"""How much a model reads its tempo channels: its teacher-forced stage-1 loss on windows of a latent set with
the true channels, against the same windows (same noise, same timesteps) with the beat moved half a beat, the
tempo scaled by 4/3 and 3/4, and the channels zeroed.

A model that follows its tempo channels should lose clearly when they lie. One whose loss hardly moves
takes the tempo from elsewhere (the context, a caption that names the bpm), and will not follow a tempo
asked of it live: that is what the 44.1 kHz run showed (docs/default-model.md). Cheap enough to watch
while training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.bundle import LMDMModel
from ..model.extras import tempo_grid
from ..train.latent_set import LatentSet
from ..train.windows import ExtrasConfig, window_batch
from .channel_use import ChannelUseConfig, lying_cost, variant_losses

# name -> (tempo factor, beat shift); None: the channels zeroed
VARIANTS: dict[str, tuple[float, float] | None] = {
    "true": (1.0, 0.0),
    "half-beat shift": (1.0, 0.5),
    "bpm x4/3": (4 / 3, 0.0),
    "bpm x3/4": (0.75, 0.0),
    "zeroed": None,
}


@dataclass(frozen=True)
class TempoUseConfig(ChannelUseConfig):
    """The windows, draws and targets of the measurement, as `eval sketch` has them."""


def retempo(extras: Tensor, model: LMDMModel, factor: float = 1.0, shift: float = 0.0) -> Tensor:
    """(B, E, n) extras with each row's tempo channels rebuilt at `factor` times its bpm, its beat `shift`
    beats later, from the bpm and bar phase its first frame holds (a steady tempo, as the renders have)."""
    sl = model.layout.offsets()["tempo"]
    out = extras.clone()
    beats_per_bar = 4
    for i in range(out.shape[0]):
        ch = out[i, sl]
        bpm = float(ch[4, 0]) * 60.0 + 120.0
        bar = (math.atan2(float(ch[2, 0]), float(ch[3, 0])) / (2 * math.pi)) % 1.0
        new = bpm * factor
        per_frame = new * model.hop / model.sample_rate / 60.0
        out[i, sl] = tempo_grid(bar * beats_per_bar + shift, out.shape[-1], per_frame, new, beats_per_bar)
    return out


def tempo_use(model: LMDMModel, data: LatentSet, cfg: TempoUseConfig = TempoUseConfig()) -> dict:
    """{"with context": {variant: loss}, "no context": {...}, "cost": {context: mean relative loss rise of
    the lying variants over "true"}}: the loss with no context says whether the channels are read when
    there is nothing else to take the tempo from."""
    if model.layout.tempo == 0:
        raise ValueError(f"model {model.name!r} has no tempo channels")
    if data.controls is None:
        raise ValueError("the latent set has no frame controls (bpm, beat and bar phase) to build tempo from")
    c, t = model.lmdm.context_frames, model.lmdm.block_frames
    gen = torch.Generator().manual_seed(cfg.seed)
    ex = ExtrasConfig(p_tempo_off=0.0, p_sketch=0.0, p_accomp=0.0, p_solo=0.0)
    lat, tok, extras, _ = window_batch(
        data, model.layout, ex, cfg.windows, c, cfg.targets * t, gen, block_frames=cfg.targets * t
    )
    zeroed = extras.clone()
    zeroed[:, model.layout.offsets()["tempo"]] = 0.0
    variants = {
        name: (extras if v == (1.0, 0.0) else zeroed if v is None else retempo(extras, model, *v))
        for name, v in VARIANTS.items()
    }
    report = variant_losses(model, lat, tok, variants, cfg)
    lying = [name for name, v in VARIANTS.items() if v not in (None, (1.0, 0.0))]
    report["cost"] = lying_cost(report, lying)
    return report
