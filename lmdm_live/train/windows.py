"""Training windows with their extra channels: tempo always (dropped now and then), sketch controls with
control dropout and a random causal median filter, accompaniment pairs for jamming, and solo melodies.

A jamming window's target is the mix without its drums (`rest`); the drums' latents are the accompaniment
input, visible up to t_f frames past the block start, with t_f drawn from [-T, T] (negative: only the past).

A solo window's target is the lead stem alone under its own caption ("a solo melody on piano, ..."),
sketched (with p_sketch_solo) by the lead's pitch, loudness and centroid. In a full mix the lead is a small
part of the loss and its pitch is a faint thing to learn; alone, following the sketch is the whole task, and
it is the case a hummed sketch asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.extras import ExtrasLayout, accomp_channels, sketch_channels, tempo_channels

if TYPE_CHECKING:
    from .latent_set import LatentSet


@dataclass(frozen=True)
class ExtrasConfig:
    p_tempo_off: float = 0.1
    p_sketch: float = 0.3
    p_accomp: float = 0.25
    p_solo: float = 0.0
    p_sketch_solo: float = 0.8
    median_kernels: tuple[int, ...] = (1, 3, 5, 9)

    def __post_init__(self) -> None:
        for name in ("p_tempo_off", "p_sketch", "p_accomp", "p_solo", "p_sketch_solo"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1")


def causal_median(x: Tensor, k: int) -> Tensor:
    """Median over the last k frames (the first frames repeat), along the last dim of (ch, n)."""
    if k <= 1:
        return x
    padded = F.pad(x[None], (k - 1, 0), mode="replicate")[0]
    return padded.unfold(-1, k, 1).median(dim=-1).values


def window_batch(
    data: LatentSet,
    layout: ExtrasLayout,
    cfg: ExtrasConfig,
    n: int,
    context: int,
    block: int,
    gen: torch.Generator,
    block_frames: int | None = None,
    rows: Sequence[int] | None = None,
) -> tuple[Tensor, ...]:
    """(latents (n, io, C+T), tokens (n, S, D), extras (n, E, C+T)).

    With `block_frames` (a rollout of several blocks after the context) the accompaniment comes back fully
    visible and each row's t_f (drawn from [-block_frames, block_frames]) comes as a fourth output, (n,):
    the rollout hides the accompaniment block by block, t_f past each block's start, as the stream does.

    With `rows` only those of the n windows are read and built, in that order (a data-parallel process's
    share); every window's draws are still made, so each row is the one a single process would make."""
    frames = context + block
    idx = torch.randint(len(data.latents), (n,), generator=gen).tolist()
    starts = data.crop_starts(idx, frames, gen)
    built: dict[int, tuple[Tensor, Tensor, Tensor, int]] = {}
    wanted = set(range(n) if rows is None else rows)
    for row, (i, s) in enumerate(zip(idx, starts)):
        sl = slice(s, s + frames)
        build = row in wanted  # the draws below depend on which stems and controls exist, never on values
        x, tokens = data.latents[i], data.tokens[i]
        u = torch.rand(4, generator=gen)
        tempo = sketch = accomp = None
        solo = (
            data.lead is not None
            and data.lead[i] is not None
            and data.controls is not None
            and data.controls[i].shape[0] >= 9
            and u[3] < cfg.p_solo
        )
        if solo:
            x, tokens = data.lead[i], data.solo_tokens[i]
        if data.controls is not None:
            c = data.controls[i][:, sl].float() if build else None
            if layout.tempo and u[0] >= cfg.p_tempo_off and c is not None:
                tempo = tempo_channels(c[0], c[1], c[2])
            if layout.sketch and u[1] < (cfg.p_sketch_solo if solo else cfg.p_sketch):
                k = cfg.median_kernels[int(torch.randint(len(cfg.median_kernels), (1,), generator=gen))]
                picked = [3, 4, 7, 8] if solo else [3, 4, 5, 6]  # a solo's loudness and centroid are its own
                if c is not None:
                    curves = causal_median(c[picked], k)
                    sketch = sketch_channels(curves[0], curves[1], curves[2], curves[3])
        has_pair = data.drums is not None and data.rest is not None and data.drums[i] is not None
        t_f = 0
        if layout.accomp and has_pair and not solo and u[2] < cfg.p_accomp:
            span = block if block_frames is None else block_frames
            t_f = int(torch.randint(-span, span + 1, (1,), generator=gen))
            if build:
                visible = torch.arange(frames) < context + t_f if block_frames is None else None
                accomp = accomp_channels(data.drums[i][:, sl], visible)
            x = data.rest[i]
        if build:
            built[row] = (x[:, sl], tokens, layout.build(frames, tempo, sketch, accomp), t_f)
    picked_rows = [built[r] for r in (range(n) if rows is None else rows)]
    lat, tok, ext, t_fs = zip(*picked_rows)
    out = torch.stack(lat), torch.stack(tok), torch.stack(ext)
    return out if block_frames is None else (*out, torch.tensor(t_fs))
