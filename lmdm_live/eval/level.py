"""`lmdm-live eval level`: how loud a model plays against the music it learnt, and the gain that matches them.

A diffusion model's output level is nobody's choice: it follows from how far the sampler overshoots,
and guidance (CFG, tempo guidance) pushes it up. The test prompts are played at the settings given (the
model's own by default, as the instrument plays it), the median RMS of the streams after their first
seconds is set against the median RMS of the real test renders, and the ratio is the model's `level`,
stored in its file, which `LMDMStream` applies to every block. The output limiter then catches only the
peaks, not the whole level.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .data import load_index, read_mix, split
from .play import EvalConfig, generate, stream_params
from .run import default_prompts


@dataclass(frozen=True)
class LevelConfig:
    prompts: int = 8  # test prompts played (style-spread, as `eval model` picks them)
    seconds: float = 12.0  # each stream
    skip: float = 2.0  # left out: the first blocks have little or no context
    steps: int | None = None  # None: the model's own
    cfg: float | None = None
    tempo_guidance: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.prompts < 1 or self.skip < 0 or self.seconds <= self.skip + 1.0:
            raise ValueError("level needs >= 1 prompt and seconds > skip + 1")


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def calibrate(model, text, data_dir, cfg: LevelConfig, tick: Callable[[int], None] | None = None) -> dict:
    """{"config", "model_rms", "real_rms", "level", "streams"}: `level` is the gain that brings the model's
    median RMS, as played with level 1, to the real renders' median RMS."""
    index = load_index(data_dir)
    prompts = default_prompts(index, cfg.prompts)
    if not prompts:
        raise ValueError(f"{data_dir}: its test split has no captions to play")
    sr, skip = model.sample_rate, int(cfg.skip * model.sample_rate)
    real = [rms(read_mix(data_dir, ex, sr)[skip:]) for ex in split(index, "test")]
    play = EvalConfig(seconds=cfg.seconds, steps=cfg.steps, cfg=cfg.cfg, tempo_guidance=cfg.tempo_guidance)
    blocks = math.ceil(cfg.seconds / model.block_seconds)
    streams = []
    for k, p in enumerate(prompts):
        # the stream plays at the model's level (a gain): divided out, the figures are its raw output's
        audio = generate(model, text, stream_params(p, play, model), blocks, cfg.seed + k)[skip:]
        raw = {"rms": rms(audio) / model.level, "peak": float(np.abs(audio).max()) / model.level}
        streams.append({"prompt": p["prompt"], **raw})
        if tick:
            tick(1)
    model_rms, real_rms = statistics.median(s["rms"] for s in streams), statistics.median(real)
    if not model_rms > 0:
        raise ValueError("the model's streams are silent: there is no level to match")
    if not real_rms > 0:
        raise ValueError(f"{data_dir}: its test renders are silent: there is no level to match")
    return {
        "config": asdict(cfg),
        "model_rms": model_rms,
        "real_rms": real_rms,
        "level": real_rms / model_rms,
        "streams": streams,
    }
