"""The extra input channels an LMDM is conditioned on, per latent frame, after [mask; clean context].

    tempo   5   sin/cos of the beat phase, sin/cos of the bar phase, (bpm - 120) / 60   (all 0: no clock)
    sketch  5   on, pitch (semitones from C4 / 12, 0 unvoiced), voiced, loudness, log2 centroid / 1 kHz
    accomp  1+z on, the accompaniment's latents (jamming: the live input, seen up to t_f frames ahead)
    tone    z   the sketch as tokens: what a plain tone at its pitch and loudness encodes to (`tone.py`),
                made from the sketch channels wherever they are built; 0 where the sketch is off

One layout in the model config (`"extras": {"tempo": true, "sketch": true, "accomp": true, "tone": true}`)
is read by training and by the stream alike, so a channel means the same thing in both. Models without
the key (SAOS conversions, the old presets) have no named extras and are fed zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .tone import ToneMap

TEMPO_CHANNELS = 5
SKETCH_CHANNELS = 5


@dataclass(frozen=True)
class ExtrasLayout:
    tempo: bool = False
    sketch: bool = False
    accomp: bool = False
    latent_dim: int = 0
    tone: bool = False
    # the codec's sketch -> tokens map (`model.tone.tone_map`); a layout with tone channels builds with it
    tone_map: ToneMap | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.tone and not self.sketch:
            raise ValueError("tone channels are made from the sketch: a layout with tone needs sketch")

    @property
    def channels(self) -> int:
        return sum(sl.stop - sl.start for sl in self.offsets().values())

    def offsets(self) -> dict[str, slice]:
        out, at = {}, 0
        for name, n in (
            ("tempo", TEMPO_CHANNELS * self.tempo),
            ("sketch", SKETCH_CHANNELS * self.sketch),
            ("accomp", (1 + self.latent_dim) * self.accomp),
            ("tone", self.latent_dim * self.tone),  # last: a model given tone keeps every other column
        ):
            out[name] = slice(at, at + n)
            at += n
        return out

    def to_dict(self) -> dict:
        out = {"tempo": self.tempo, "sketch": self.sketch, "accomp": self.accomp}
        return {**out, "tone": True} if self.tone else out

    @classmethod
    def from_config(
        cls, config: dict | None, latent_dim: int, tone_map: ToneMap | None = None
    ) -> ExtrasLayout:
        config = config or {}
        return cls(
            bool(config.get("tempo")),
            bool(config.get("sketch")),
            bool(config.get("accomp")),
            latent_dim,
            bool(config.get("tone")),
            tone_map,
        )

    def build(
        self,
        n: int,
        tempo: Tensor | None = None,
        sketch: Tensor | None = None,
        accomp: Tensor | None = None,
    ) -> Tensor:
        """(channels, n): the named parts where given (already channel-encoded), zeros elsewhere; the tone
        channels from the sketch's."""
        out = torch.zeros(self.channels, n)
        for name, part in (("tempo", tempo), ("sketch", sketch), ("accomp", accomp)):
            sl = self.offsets()[name]
            if part is None or sl.stop == sl.start:
                continue
            if part.shape != (sl.stop - sl.start, n):
                raise ValueError(
                    f"{name} extras must be ({sl.stop - sl.start}, {n}), got {tuple(part.shape)}"
                )
            out[sl] = part
        return self.with_tone(out) if sketch is not None else out

    def with_tone(self, extras: Tensor) -> Tensor:
        """Extras (..., channels, n) with the tone channels made again from the sketch channels (after a
        change to those), in place; unchanged without tone channels."""
        if not self.tone:
            return extras
        if self.tone_map is None:
            raise ValueError(
                "this layout has tone channels but no tone map (build it with the model's codec)"
            )
        sk, tn = self.offsets()["sketch"], self.offsets()["tone"]
        flat_sk = extras[..., sk, :].reshape(-1, sk.stop - sk.start, extras.shape[-1])
        tone = torch.stack([self.tone_map.tokens(row) for row in flat_sk])
        extras[..., tn, :] = tone.reshape(*extras.shape[:-2], tn.stop - tn.start, extras.shape[-1])
        return extras


def tempo_channels(bpm: Tensor, beat_phase: Tensor, bar_phase: Tensor) -> Tensor:
    """(5, n) from per-frame bpm and phases in [0, 1)."""
    two_pi = 2 * np.pi
    return torch.stack(
        [
            torch.sin(two_pi * beat_phase),
            torch.cos(two_pi * beat_phase),
            torch.sin(two_pi * bar_phase),
            torch.cos(two_pi * bar_phase),
            (bpm - 120.0) / 60.0,
        ]
    ).float()


def tempo_grid(
    start_beat: float, n: int, beats_per_frame: float, bpm: float, beats_per_bar: int = 4
) -> Tensor:
    """Tempo channels for n frames from beat position `start_beat` at a steady tempo."""
    beats = start_beat + beats_per_frame * torch.arange(n, dtype=torch.float64)
    return tempo_channels(
        torch.full((n,), float(bpm)), (beats % 1.0).float(), ((beats / beats_per_bar) % 1.0).float()
    )


def sketch_channels(pitch_midi: Tensor, voiced: Tensor, loudness_db: Tensor, centroid_hz: Tensor) -> Tensor:
    """(5, n) from sketch control curves (see `lmdm_live.dsp.sketch.Controls`)."""
    v = (voiced > 0.5).float()
    return torch.stack(
        [
            torch.ones_like(v),
            v * (pitch_midi - 60.0) / 12.0,
            v,
            ((loudness_db + 40.0) / 20.0).clamp(-2.0, 2.0),
            torch.log2(centroid_hz.clamp(min=50.0) / 1000.0),
        ]
    ).float()


def accomp_channels(latents: Tensor, visible: Tensor | None = None) -> Tensor:
    """(1 + z, n): the accompaniment's latents with an on-flag; frames not `visible` are zeros, flag too."""
    n = latents.shape[-1]
    vis = torch.ones(n) if visible is None else visible.float()
    return torch.cat([vis[None], latents.float() * vis[None]], dim=0)
