"""`lmdm-live eval follow`: does the music go at the tempo it is asked for?

Streams are played at several bpm from prompts that name no tempo (so only the tempo channels can carry
it), once per tempo-guidance weight, and the tempo of each is read from its decoded audio (`dsp.tempo`),
leaving out the first seconds, where there is no context yet. Needs neither the classifier nor data, so
it is the figure to choose `tempo_guidance` by; `eval model` reports the same error on the test prompts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from ..dsp.tempo import estimate_bpm, tempo_error
from .play import generate, tempo_params

# no tempo word, no bpm: styles of the default model's vocabulary with their usual lead and drums
PROMPTS = (
    "dark techno with saw lead and four-on-the-floor drums",
    "warm house with piano lead and four-on-the-floor drums",
    "laid-back hip hop with electric piano lead and boom bap drums",
    "rock with overdriven guitar lead and rock drums",
    "drum and bass with synth lead and breakbeat drums",
    "funk with slap bass lead and funk drums",
    "reggae with organ lead and one-drop drums",
    "synthwave with saw lead and gated drums",
)


@dataclass(frozen=True)
class FollowConfig:
    bpms: tuple[float, ...] = (90.0, 120.0, 140.0)
    weights: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0)  # tempo_guidance values compared
    prompts: tuple[str, ...] = PROMPTS
    seconds: float = 16.0  # each stream
    skip: float = 2.0  # left out of the tempo estimate: the first blocks have little or no context
    steps: int | None = None  # None: the model's own
    cfg: float | None = None
    seed: int = 0  # prompt k streams with seed + k, the same for every weight and bpm
    tolerance: float = 0.05  # "within": a tempo error under this

    def __post_init__(self) -> None:
        if not self.bpms or not self.weights or not self.prompts:
            raise ValueError("bpms, weights and prompts must not be empty")
        if self.seconds <= self.skip + 4.0 or self.skip < 0:
            raise ValueError("seconds must exceed skip by at least 4 s (a tempo needs a few beats)")


def follow(model, text, cfg: FollowConfig, tick: Callable[[int], None] | None = None) -> dict:
    """{"config", "streams": one row per (weight, bpm, prompt), "summary": per weight}."""
    sr = model.sample_rate
    blocks = math.ceil(cfg.seconds / model.block_seconds)
    streams = []
    for w in cfg.weights:
        sampler = model.sampler_settings(steps=cfg.steps, cfg=cfg.cfg, tempo_guidance=w)
        for bpm in cfg.bpms:
            for k, prompt in enumerate(cfg.prompts):
                params = tempo_params(prompt, bpm, sampler)
                audio = generate(model, text, params, blocks, cfg.seed + k)[int(cfg.skip * sr) :]
                heard = estimate_bpm(audio, sr)
                streams.append(
                    {
                        "tempo_guidance": w,
                        "bpm": bpm,
                        "prompt": prompt,
                        "heard_bpm": round(heard, 2),
                        "error": tempo_error(heard, bpm),
                        "octave_error": tempo_error(heard, bpm, octave=True),
                        "peak": float(np.abs(audio).max()),
                    }
                )
                if tick:
                    tick(1)
    return {"config": asdict(cfg), "streams": streams, "summary": summarise(streams, cfg.tolerance)}


def summarise(streams: list[dict], tolerance: float = 0.05) -> dict[str, dict]:
    """Per tempo-guidance weight: median error (plain and octave-folded), the share within `tolerance`,
    and the median peak (full scale is 1)."""
    out = {}
    for w in dict.fromkeys(s["tempo_guidance"] for s in streams):
        rows = [s for s in streams if s["tempo_guidance"] == w]
        errors = [s["error"] for s in rows if np.isfinite(s["error"])]
        octave = [s["octave_error"] for s in rows if np.isfinite(s["octave_error"])]
        out[f"{w:g}"] = {
            "streams": len(rows),
            "error_median": statistics.median(errors) if errors else float("nan"),
            "within": sum(e < tolerance for e in errors) / len(rows),
            "octave_error_median": statistics.median(octave) if octave else float("nan"),
            "octave_within": sum(e < tolerance for e in octave) / len(rows),
            "peak_median": statistics.median(s["peak"] for s in rows),
        }
    return out
