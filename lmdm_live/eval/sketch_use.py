"""How much a model reads its sketch channels: its teacher-forced stage-1 loss on the lead-stem (solo) windows
a hummed sketch is trained on, with each window's own sketch, against the same windows (same noise, same
timesteps) sketched by another window, with the melody moved a fifth, and with the sketch off.

A model that follows a hum must lose clearly when the sketch lies. One whose loss hardly moves takes the
melody from its context, and plays on whatever it held when the hum starts: that is what the 44.1 kHz run
showed (docs/default-model.md). Cheap enough to watch while training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.bundle import LMDMModel
from ..train.latent_set import LatentSet
from ..train.windows import ExtrasConfig, window_batch
from .channel_use import ChannelUseConfig, lying_cost, variant_losses

FIFTH = 7.0 / 12.0  # the pitch channel is (midi - 60) / 12 where voiced
LYING = ("another window's", "a fifth up")


@dataclass(frozen=True)
class SketchUseConfig(ChannelUseConfig):
    """`ChannelUseConfig`'s windows, draws and targets; at least two windows, as one lends another its sketch."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.windows < 2:
            raise ValueError("windows must be >= 2 (one lends the other its sketch)")


def sketch_variants(extras: Tensor, model: LMDMModel) -> dict[str, Tensor]:
    """(B, E, n) extras with the sketch on -> {"true", "another window's", "a fifth up", "off"}: the
    sketch channels of row i replaced by row i-1's, its pitch raised seven semitones where voiced, zeroed."""
    sl = model.layout.offsets()["sketch"]
    other = extras.clone()
    other[:, sl] = extras[torch.roll(torch.arange(extras.shape[0]), 1), sl]
    fifth = extras.clone()
    fifth[:, sl.start + 1] += FIFTH * extras[:, sl.start + 2]  # channel 1 pitch, channel 2 voiced
    off = extras.clone()
    off[:, sl] = 0.0
    layout = model.layout  # a model with tone channels hears each variant's tone too
    return {
        "true": extras,
        "another window's": layout.with_tone(other),
        "a fifth up": layout.with_tone(fifth),
        "off": layout.with_tone(off),
    }


def sketch_use(model: LMDMModel, data: LatentSet, cfg: SketchUseConfig = SketchUseConfig()) -> dict:
    """{"with context": {variant: loss}, "no context": {...}, "cost": {context: mean relative loss rise of
    the lying sketches over "true"}}, on sketched windows: the lead stem alone, sketched by itself, where the
    example has one."""
    if not model.layout.sketch:
        raise ValueError(f"model {model.name!r} has no sketch channels")
    if (
        data.lead is None
        or data.controls is None
        or not any(x is not None and c.shape[0] >= 9 for x, c in zip(data.lead, data.controls))
    ):
        raise ValueError(
            "the latent set has no lead stems with their controls (`train latents` on rendered data)"
        )
    c, t = model.lmdm.context_frames, model.lmdm.block_frames
    gen = torch.Generator().manual_seed(cfg.seed)
    ex = ExtrasConfig(p_tempo_off=0.0, p_sketch=1.0, p_accomp=0.0, p_solo=1.0, p_sketch_solo=1.0)
    lat, tok, extras, _ = window_batch(
        data, model.layout, ex, cfg.windows, c, cfg.targets * t, gen, block_frames=cfg.targets * t
    )
    report = variant_losses(model, lat, tok, sketch_variants(extras, model), cfg)
    report["cost"] = lying_cost(report, list(LYING))
    return report
