"""A lookahead peak limiter for the instrument's output, so no sample leaves past a ceiling.

A diffusion model's level is not calibrated: a token it overshoots makes a band many times louder, and
guidance (CFG, tempo guidance) pushes the whole output up. Clipping that at the device is harsh; this
turns the gain down smoothly just before a peak and lets it come back over `release_ms`.

The gain is computed at a control rate (one point every `chunk` samples) and interpolated linearly in
between. Each control point is at most the gain the samples on both sides of it allow, so the
interpolated gain never lets a sample past the ceiling. The lookahead is whatever the caller already
holds back (the output chain's crossfade tail), so the limiter adds no latency of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LimiterConfig:
    ceiling: float = 0.98  # linear peak a sample may reach (-0.18 dBFS)
    attack_ms: float = 2.0  # how fast the gain falls ahead of a peak, as far as the lookahead allows
    release_ms: float = 120.0  # how fast it comes back
    chunk: int = 32  # samples per control point

    def __post_init__(self) -> None:
        if not 0.0 < self.ceiling <= 1.0:
            raise ValueError(f"limiter ceiling must be in (0, 1], got {self.ceiling}")
        if self.attack_ms <= 0 or self.release_ms <= 0 or self.chunk < 1:
            raise ValueError("limiter attack_ms, release_ms and chunk must be > 0")


class Limiter:
    """Stateful across calls: the gain at the end of one call is where the next one starts."""

    def __init__(self, rate: int, cfg: LimiterConfig | None = None) -> None:
        self.cfg = cfg or LimiterConfig()
        c = self.cfg.chunk / rate
        self._attack = 1.0 - math.exp(-c / (self.cfg.attack_ms / 1e3))
        self._release = 1.0 - math.exp(-c / (self.cfg.release_ms / 1e3))
        self.gain = 1.0  # at the end of the last call
        self.reduction_db = 0.0  # the deepest cut of the last call, in dB (0: untouched)

    def _allowed(self, x: np.ndarray) -> np.ndarray:
        """Per chunk: the largest gain that keeps every sample of it under the ceiling."""
        n, k = x.shape[0], self.cfg.chunk
        peak = np.abs(x).max(axis=1) if x.ndim == 2 else np.abs(x)
        peak = np.where(np.isfinite(peak), peak, 0.0)  # non-finite samples are the stream's to handle
        pad = (-n) % k
        if pad:
            peak = np.concatenate([peak, np.zeros(pad, peak.dtype)])
        peak = peak.reshape(-1, k).max(axis=1).astype(np.float64)
        with np.errstate(divide="ignore"):
            return np.minimum(1.0, self.cfg.ceiling / peak)

    def process(self, x: np.ndarray, ahead: np.ndarray | None = None) -> np.ndarray:
        """x: (n, channels) float32 to be emitted now; ahead: the samples that follow it, if known (read,
        not emitted). Returns x with the gain applied (a non-finite sample sets no gain)."""
        n, k = x.shape[0], self.cfg.chunk
        if n == 0:
            return x
        m = self._allowed(x)  # chunks of x; point j sits at the start of chunk j, point len(m) at its end
        nx = len(m)
        if ahead is not None and ahead.shape[0]:
            m = np.concatenate([m, self._allowed(ahead)])
        # a point is bounded by the chunks on both sides of it
        bound = np.minimum(np.concatenate([m[:1], m]), np.concatenate([m, m[-1:]])).tolist()
        # backward: fall ahead of a peak at the attack rate (within what is known of the future)
        att = self._attack
        for j in range(len(bound) - 2, -1, -1):
            nxt = bound[j + 1]
            bound[j] = min(bound[j], nxt + (1.0 - nxt) * att)
        # forward: never faster back up than the release; the first point cannot be raised above the last
        # call's end (and where a peak it could not see needs less, the gain steps down at once)
        g = [min(self.gain, bound[0])]
        rel = self._release
        for j in range(1, nx + 1):
            prev = g[-1]
            up = prev + (1.0 - prev) * rel
            g.append(min(bound[j], 1.0 if up > 0.9999 else up))  # back to exactly 1: audio untouched again
        self.gain = g[-1]
        low = min(g)
        self.reduction_db = 0.0 if low >= 1.0 else -20.0 * math.log10(max(low, 1e-6))
        if low >= 1.0:
            return x
        pos = np.minimum(np.arange(nx + 1) * k, n)
        gain = np.interp(np.arange(n), pos, g).astype(np.float32)
        return x * (gain[:, None] if x.ndim == 2 else gain)

    def snapshot(self) -> float:
        return self.gain

    def restore(self, gain: float) -> None:
        self.gain = float(gain)


DEFAULT_LIMITER = LimiterConfig()
