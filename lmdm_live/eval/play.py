"""Playing a model offline for evaluation: the settings, the stream each prompt is generated with (the one
place eval/ uses the live stream), and the crops the classifier embeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from .classifier import Classifier
from .data import to_mono

Tick = Callable[[int], None]


@dataclass
class EvalConfig:
    seconds: float = 120.0  # length of each generated stream
    window: float = 10.0  # scoring window
    steps: int | None = None  # None: the model's own sampler defaults
    cfg: float | None = None
    tempo_guidance: float | None = None  # None: the model's own
    seed: int = 0  # prompt k streams with seed + k, the same for every model compared
    max_prompts: int | None = None
    fd_crop: float = 2.0  # FD sets are crops of this length (the classifier's shortest training crop) ...
    fd_hop: float = 1.0  # ... this far apart, so a window of one stream gives several vectors
    short_window: float = 2.0  # sliding window of the transition measurement
    transitions: int = 4  # prompt switches measured
    transition_seconds: float = 40.0  # each: half on the old prompt, half on the new
    settle: float = 0.9  # adapted once this fraction of the way from the old to the new steady level
    eject_frames: int | None = None  # context dropped at a switch; None: the stream's default (C - T)
    transition_cfg_pp: float | str = "default"  # CFG++ lambda through a switch; "off": plain CFG
    saturation_blocks: int = 4  # blocks after a switch whose peak and spectral flatness are reported

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.window <= 0 or self.fd_crop <= 0 or self.fd_hop <= 0:
            raise ValueError("seconds, window, fd_crop and fd_hop must be > 0")
        if self.transitions < 0 or self.transition_seconds <= 0:
            raise ValueError("transitions must be >= 0 and transition_seconds > 0")
        if isinstance(self.transition_cfg_pp, str) and self.transition_cfg_pp not in ("default", "off"):
            raise ValueError("transition_cfg_pp must be a number, 'default' or 'off'")

    def switch_block(self, block_seconds: float) -> int:
        """The block at which a transition stream switches prompt (half its blocks)."""
        return max(2, math.ceil(self.transition_seconds / 2 / block_seconds))


# --- generation -----------------------------------------------------------------------------------------


def stream_params(prompt: dict, cfg: EvalConfig, model):
    """StreamParams for a prompt (the model's sampler defaults under cfg's overrides), with its bpm."""
    from ..live.stream import StreamParams

    kw: dict = {
        "sampler": model.sampler_settings(steps=cfg.steps, cfg=cfg.cfg, tempo_guidance=cfg.tempo_guidance)
    }
    if cfg.eject_frames is not None:
        kw["eject_frames"] = cfg.eject_frames
    if cfg.transition_cfg_pp != "default":
        kw["transition_cfg_pp"] = None if cfg.transition_cfg_pp == "off" else float(cfg.transition_cfg_pp)
    if prompt.get("bpm") is not None and "bpm" in {f.name for f in fields(StreamParams)}:
        kw["bpm"] = float(prompt["bpm"])
    return StreamParams.of(prompt["prompt"], **kw)


def tempo_params(prompt: str, bpm: float, sampler):
    """StreamParams for one prompt played at `bpm` with `sampler` (`eval follow`)."""
    from ..live.stream import StreamParams

    return StreamParams.of(prompt, sampler=sampler, bpm=bpm)


def generate(
    model, text, first, blocks: int, seed: int, changes: dict | None = None, tick: Tick | None = None
):
    """`blocks` blocks of one stream (with `changes` {block: params} scheduled), decoded: mono float32 at
    the model's rate, sample-aligned with block boundaries (block b is [b * B, (b + 1) * B))."""
    from ..live.stream import LMDMStream

    stream = LMDMStream(model, text, seed=seed, params=first)
    for block, params in (changes or {}).items():
        stream.at(block, params)
    parts = []
    for _ in range(blocks):
        parts.append(to_mono(stream.next_block()))
        if tick:
            tick(1)
    parts.append(to_mono(stream.flush()))
    return np.concatenate(parts)


def crops(audio: np.ndarray, sr: int, length: float, hop: float) -> np.ndarray:
    """(n, samples) crops of `length` s every `hop` s; one (the whole, zero-padded) when shorter."""
    n, h = int(round(length * sr)), int(round(hop * sr))
    if len(audio) <= n:
        return np.pad(audio, (0, n - len(audio)))[None]
    return np.stack([audio[s : s + n] for s in range(0, len(audio) - n + 1, h)])


def embed(clf: Classifier, crops: np.ndarray, sr: int, batch: int = 64) -> np.ndarray:
    return np.concatenate([clf.embed(crops[i : i + batch], sr) for i in range(0, len(crops), batch)])
