"""Few-step rectified-flow samplers for one block: Euler and ping-pong, with CFG or CFG++.

The model predicts the velocity v = eps - x0 at noise level t (x_t = (1-t) x0 + t eps). `denoise(x, t, i)`
returns v for a batch of `SamplerSettings.rows` rows: the conditional row, then the unconditional one when
CFG guides, then (tempo guidance) the conditional row with the tempo channels zeroed, then (sketch
guidance) the conditional row with the sketch's channels zeroed. Everything else about the model (caches,
fused first steps) stays behind that callable.

Tempo guidance is classifier-free guidance on the tempo channels alone, v += w (v_c - v_c without tempo):
a model that hardly reads its tempo channels, because its captions and context carry the tempo too, is
pushed toward what they add (docs/default-model.md measures it). Sketch guidance does the same for a
hummed sketch (its five channels and the tone's), which the context carries too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

Sampler = Literal["euler", "pingpong"]
MAX_TEMPO_GUIDANCE = 50.0  # the same range as the parameter table's (live/params.py)
Denoise = Callable[[Tensor, float, int], Tensor]


def logsnr_schedule(steps: int, lo: float = -6.0, hi: float = 2.0) -> list[float]:
    """t_i = sigmoid(-lambda_i), lambda = linspace(lo, hi, steps+1), with the ends pinned to 1 and 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lam = torch.linspace(lo, hi, steps + 1, dtype=torch.float64)
    ts = torch.sigmoid(-lam).tolist()
    ts[0], ts[-1] = 1.0, 0.0
    return ts


@dataclass(frozen=True)
class SamplerSettings:
    sampler: Sampler = "pingpong"
    steps: int = 8
    cfg: float = 1.0  # classic CFG scale; 1 = no guidance
    cfg_pp: float | None = None  # CFG++ lambda (used instead of cfg when set)
    tempo_guidance: float = 0.0  # w of guidance on the tempo channels; 0 = off (no third row)
    sketch_guidance: float = 0.0  # w of guidance on the sketch channels, while one plays; 0 = off

    def __post_init__(self) -> None:
        if self.sampler not in ("euler", "pingpong"):
            raise ValueError(f"sampler must be 'euler' or 'pingpong', got {self.sampler!r}")
        if not 1 <= self.steps <= 100:
            raise ValueError(f"steps must be in 1..100, got {self.steps}")
        if not 0.0 <= self.cfg <= 20.0:
            raise ValueError(f"cfg must be in 0..20, got {self.cfg}")
        if self.cfg_pp is not None and not 0.0 <= self.cfg_pp <= 2.0:
            raise ValueError(f"cfg_pp must be in 0..2, got {self.cfg_pp}")
        for name in ("tempo_guidance", "sketch_guidance"):
            if not 0.0 <= getattr(self, name) <= MAX_TEMPO_GUIDANCE:
                raise ValueError(f"{name} must be in 0..{MAX_TEMPO_GUIDANCE:g}, got {getattr(self, name)}")

    @property
    def guided(self) -> bool:
        """Whether the unconditional branch is needed."""
        return self.cfg_pp is not None or self.cfg != 1.0

    @property
    def rows(self) -> int:
        """The batch each model call runs: conditional, [unconditional], [conditional without tempo],
        [conditional without the sketch]."""
        return 1 + self.guided + (self.tempo_guidance > 0) + (self.sketch_guidance > 0)


def sample_block(
    denoise: Denoise, x: Tensor, s: SamplerSettings, gen: torch.Generator, exit: int | None = None
) -> Tensor:
    """Denoise x (pure noise at t=1) to a clean block with s.steps model calls.

    `exit` = k stops after k calls and returns that step's clean estimate x0 (ARC-Forcing's random exit
    step); k = s.steps is the whole sampler. v holds `s.rows` rows (see the module docstring)."""
    ts = logsnr_schedule(s.steps)
    steps = s.steps if exit is None else exit
    if not 1 <= steps <= s.steps:
        raise ValueError(f"exit must be in 1..{s.steps}, got {exit}")
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        v = denoise(x, t, i)
        if s.rows == 1:  # every row its own stream (a training rollout batches streams)
            v_g = v_u = v
        else:
            v_c = v[:1]
            v_u = v[1:2] if s.guided else v_c
            scale = s.cfg_pp if s.cfg_pp is not None else s.cfg
            v_g = v_u + scale * (v_c - v_u) if s.guided else v_c
            row = 1 + s.guided
            if s.tempo_guidance > 0:
                v_g = v_g + s.tempo_guidance * (v_c - v[row : row + 1])
                row += 1
            if s.sketch_guidance > 0:
                v_g = v_g + s.sketch_guidance * (v_c - v[row : row + 1])
        x0 = x - t * v_g
        if t_next == 0.0 or i == steps - 1:
            return x0
        # CFG++ (LMDM's rectified-flow form): re-anchor on the unconditional branch instead of the guided one
        anchor = x - t * v_u if s.cfg_pp is not None else x0
        if s.sampler == "pingpong":
            eps = torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x.device, x.dtype)
            x = x0 + t_next * (eps - anchor)
        else:
            x = x0 + t_next * (v_u if s.cfg_pp is not None else v_g)  # plain Euler: x + (t_next - t) v
    return x
