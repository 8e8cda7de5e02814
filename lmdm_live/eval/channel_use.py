"""What `eval tempo` and `eval sketch` share: the teacher-forced stage-1 loss of one batch of windows under
variants of their extra channels, the same noise and timesteps for every variant, with the context and
without, and what the lying variants cost over the true one."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.bundle import LMDMModel
from ..model.lmdm import LMDM
from ..train.stage1 import Stage1Config, chunks_loss


@dataclass(frozen=True)
class ChannelUseConfig:
    windows: int = 16  # windows drawn from the latent set, one batch
    seeds: int = 4  # noise/timestep draws per variant (the same draws for every variant)
    targets: int = 8  # target blocks per window, teacher-forced as in stage 1
    seed: int = 123

    def __post_init__(self) -> None:
        if self.windows < 1 or self.seeds < 1 or self.targets < 1:
            raise ValueError("windows, seeds and targets must be >= 1")


def variant_losses(
    model: LMDMModel, lat: Tensor, tok: Tensor, variants: dict[str, Tensor], cfg: ChannelUseConfig
) -> dict:
    """{"with context": {variant: loss}, "no context": {...}}: the teacher-forced stage-1 loss of the same
    windows under each variant of their extra channels, with the same noise and timesteps for all
    (`cfg.seeds` draws, from `cfg.seed`)."""
    lmdm = LMDM(model.dit, model.lmdm)
    model.net.eval()
    report: dict = {}
    for label, p_uncond in (("with context", 0.0), ("no context", 1.0)):
        s1 = Stage1Config(
            batch=lat.shape[0], p_uncond=p_uncond, p_partial=0.0, cfg_dropout=0.0, targets=cfg.targets
        )
        losses = {}
        for name, e in variants.items():
            total = 0.0
            with torch.no_grad():
                for k in range(cfg.seeds):
                    g = torch.Generator().manual_seed(cfg.seed + 1000 + k)
                    total += float(chunks_loss(model, lmdm, lat, tok, s1, g, e))
            losses[name] = total / cfg.seeds
        report[label] = losses
    return report


def lying_cost(report: dict, lying: list[str]) -> dict[str, float]:
    """Per context: the mean relative rise of the `lying` variants' loss over "true"."""
    return {
        label: sum(report[label][n] for n in lying) / (len(lying) * report[label]["true"]) - 1.0
        for label in ("with context", "no context")
    }
