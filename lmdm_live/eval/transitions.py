"""Prompt transitions, measured: how fast a stream turns from one prompt to the next, and how much a switch
saturates, against a real spliced reference.
"""

from __future__ import annotations

import numpy as np

from .classifier import Classifier, adherence
from .data import resample
from .metrics import nanmean
from .play import EvalConfig, generate, stream_params


def measure_transition(model, text, clf: Classifier, a: dict, b: dict, seed: int, cfg: EvalConfig, tick=None):
    """Play `a`, switch to `b` at the middle block, and count blocks until `b` is followed (`time_switch`)."""
    half = cfg.switch_block(model.block_seconds)
    audio = generate(
        model,
        text,
        stream_params(a, cfg, model),
        2 * half,
        seed,
        {half: stream_params(b, cfg, model)},
        tick=tick,
    )
    out = time_switch(clf, audio, model.sample_rate, model.block_seconds, half, a, b, cfg)
    n = cfg.saturation_blocks
    bs = model.block_seconds
    for key, first in (("before", half - n), ("after", half)):
        out.update({f"{k}_{key}": v for k, v in saturation(audio, model.sample_rate, bs, first, n).items()})
    return out


def saturation(audio: np.ndarray, rate: int, block_seconds: float, first: int, n: int) -> dict:
    """Over-saturation figures of blocks [first, first + n): the peak |sample| and the mean spectral
    flatness (geometric over arithmetic mean of the power spectrum, per 64 ms frame; 1 = white noise).
    Plain CFG at few steps after a switch shows as louder peaks and a flatter, noisier spectrum."""
    a = int(round(max(first, 0) * block_seconds * rate))
    b = min(int(round((first + n) * block_seconds * rate)), len(audio))
    x = np.asarray(audio[a:b], dtype=np.float64)
    if len(x) == 0:
        return {"peak": float("nan"), "flatness": float("nan")}
    frame = max(int(0.064 * rate), 16)
    frames = [x[i : i + frame] for i in range(0, len(x) - frame + 1, frame // 2)] or [x]
    flat = []
    for f in frames:
        p = np.abs(np.fft.rfft(f * np.hanning(len(f)))) ** 2 + 1e-12
        flat.append(float(np.exp(np.mean(np.log(p))) / np.mean(p)))
    return {"peak": float(np.abs(x).max()), "flatness": float(np.mean(flat))}


def splice_transition(model, clf: Classifier, real_audio: dict, a: dict, b: dict, cfg: EvalConfig):
    """The same measurement on a switch that takes no time: `a`'s real test render up to the switch block,
    then `b`'s, the whole through the model's autoencoder (as generated audio is). What the measurement's
    own sliding window makes of an instant switch: the floor under a model's count. None when either prompt
    has no real render long enough."""
    from .data import CodecRoundTrip

    half = cfg.switch_block(model.block_seconds)
    sr = clf.cfg.sample_rate
    seg = int(round(half * model.block_seconds * sr))
    xa, xb = real_audio.get(a.get("id")), real_audio.get(b.get("id"))
    if xa is None or xb is None or min(len(xa), len(xb)) < seg:
        return None
    audio = CodecRoundTrip(model)(np.concatenate([xa[:seg], xb[:seg]]), sr)
    return time_switch(clf, audio, sr, model.block_seconds, half, a, b, cfg)


def time_switch(clf: Classifier, audio, rate: int, bs: float, half: int, a: dict, b: dict, cfg: EvalConfig):
    """Blocks from the switch (at block `half` of `audio`) until `b` is followed, two ways.

    Adherence here is the soft one (mean probability of `b`'s classes) on a `short_window` of audio: hard
    correctness on 2 s flips too often to time a change by. "Followed" is the first block at which it has
    come `settle` (90 %) of the way from its level before the switch to its steady level (the mean over the
    second half of the post-switch blocks); the switch block counts as 1. When the new prompt is not
    followed better than the old one at all (gain < 0.05) there is nothing to time and the count is None.

    - `blocks`: the window ends where each block ends (what a listener has heard by then). It looks back, so
      even an instant switch counts a few blocks: `splice_transition` measures that floor.
    - `blocks_ahead`: the window starts where each block starts (the music from that block on). An instant
      switch counts 1: this is the block the music has changed by.
    """
    sr = clf.cfg.sample_rate
    audio = resample(audio, rate, sr)
    short, n = int(round(cfg.short_window * sr)), 2 * half
    starts = [int(round(k * bs * sr)) for k in range(n)]
    ends = [min(int(round((k + 1) * bs * sr)), len(audio)) for k in range(n)]
    behind = {k: ends[k] - short for k in range(n) if ends[k] >= short}  # window start, by block
    ahead = {k: starts[k] for k in range(n) if starts[k] + short <= len(audio)}
    crops = [audio[s0 : s0 + short] for s0 in [*behind.values(), *ahead.values()]]
    preds = clf.predict(np.stack(crops), sr) if crops else []
    by_behind = dict(zip(behind, preds[: len(behind)]))
    by_ahead = dict(zip(ahead, preds[len(behind) :]))
    nan = float("nan")

    def soft(by: dict, labels: dict) -> list[float]:
        return [adherence(by[k], labels)["soft"] if k in by else nan for k in range(n)]

    new, old, new_ahead = (
        soft(by_behind, b["labels"]),
        soft(by_behind, a["labels"]),
        soft(by_ahead, b["labels"]),
    )
    switch = starts[half]
    # before the switch: windows wholly before it (the look-ahead ones must end by it)
    before_ahead = [v for k, v in enumerate(new_ahead[:half]) if starts[k] + short <= switch]
    result = {
        "from": a["prompt"],
        "to": b["prompt"],
        "switch_block": half,
        "block_seconds": bs,
        "adherence_new": new,
        "adherence_old": old,
        "adherence_new_ahead": new_ahead,
        **_settle(new, new[:half], half, cfg.settle, ""),
        **_settle(new_ahead, before_ahead, half, cfg.settle, "_ahead"),
    }
    result["seconds"] = None if result["blocks"] is None else result["blocks"] * bs
    return result


def _settle(new: list[float], before_values: list[float], half: int, settle: float, suffix: str) -> dict:
    """The first block after the switch at which `new` has come `settle` of the way to its steady level."""
    before, steady = nanmean(before_values), nanmean(new[half + half // 2 :])
    out = {f"before{suffix}": before, f"steady{suffix}": steady, f"blocks{suffix}": None}
    if np.isfinite(steady) and np.isfinite(before) and steady - before >= 0.05:
        threshold = before + settle * (steady - before)
        hit = next((k for k in range(half, 2 * half) if new[k] >= threshold), 2 * half - 1)
        out.update({f"threshold{suffix}": threshold, f"blocks{suffix}": hit - half + 1})
    return out
