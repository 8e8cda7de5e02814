"""Tempo from the onset envelope's autocorrelation, and the error against a requested tempo.

Octaves: a beat at B bpm also repeats at B/2 (every other beat), so every candidate is scored on its
first four multiples of the period, and a candidate whose *half* period is strongly periodic as well is
penalised when its double is in range (that periodicity is its double, then the better answer). A candidate
whose double is out of range keeps its score: eighth notes under a 126 bpm house beat are not a reason to
prefer 84 bpm (whose half period, three sixteenths, nothing marks), which is what an unconditional penalty
did to four-on-the-floor music with off-beat hats. The autocorrelation is the biased one (it falls with
lag), which breaks the remaining tie toward the faster of two octaves. Breakbeats can still come out at
half their tempo and eighth-note-driven music at twice; `tempo_error(..., octave=True)` folds such octave
errors away and the evaluation reports both.
"""

from __future__ import annotations

import numpy as np

from .features import onset_strength

BPM_RANGE = (60.0, 200.0)


def _autocorrelation(env: np.ndarray) -> np.ndarray:
    """Biased autocorrelation of the mean-removed envelope, normalised to 1 at lag 0."""
    x = env - env.mean()
    n = len(x)
    spec = np.fft.rfft(x, 2 * n)
    ac = np.fft.irfft(spec * np.conj(spec))[:n]
    return ac / ac[0] if ac[0] > 0 else np.zeros(n)


def tempo_scores(
    audio, sample_rate: int, bpm_range: tuple[float, float] = BPM_RANGE, resolution: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """(candidate bpms, score of each): a harmonic-sum tempogram over `bpm_range` in `resolution` steps."""
    env, rate = onset_strength(audio, sample_rate)
    ac = _autocorrelation(env)
    lags_axis = np.arange(len(ac), dtype=np.float64)
    bpms = np.arange(bpm_range[0], bpm_range[1] + resolution / 2, resolution)
    period = 60.0 * rate / bpms  # frames per beat

    def at(lag: np.ndarray) -> np.ndarray:
        return np.interp(lag, lags_axis, ac, right=0.0)

    score = sum(at(k * period) / k for k in range(1, 5))
    double_in_range = 2.0 * bpms <= bpm_range[1]
    score = score - 0.5 * np.maximum(at(period / 2), 0.0) * double_in_range
    return bpms, score


def estimate_bpm(audio, sample_rate: int, bpm_range: tuple[float, float] = BPM_RANGE) -> float:
    """The tempo in bpm of mono or (channels, samples) audio; NaN for audio with no onsets at all."""
    bpms, score = tempo_scores(audio, sample_rate, bpm_range)
    if not np.isfinite(score).all() or np.ptp(score) == 0:
        return float("nan")
    i = int(np.argmax(score))
    if 0 < i < len(score) - 1:  # parabolic refinement between grid points
        a, b, c = score[i - 1], score[i], score[i + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float(bpms[i] + np.clip(shift, -0.5, 0.5) * (bpms[1] - bpms[0]))
    return float(bpms[i])


def tempo_error(estimated: float, requested: float, octave: bool = False) -> float:
    """|estimated - requested| / requested; with `octave`, the smallest such error over estimated * 2^k."""
    if requested <= 0:
        raise ValueError(f"requested tempo must be > 0, got {requested}")
    if not np.isfinite(estimated):
        return float("nan")
    if not octave:
        return abs(estimated - requested) / requested
    return min(abs(estimated * 2.0**k - requested) / requested for k in (-2, -1, 0, 1, 2))
