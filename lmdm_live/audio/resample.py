"""`StreamResampler`: polyphase rate conversion from the model's rate to the device's, block by block.

The decoder hands out blocks of whatever size; the device wants its own rate. The resampler keeps the
last input frames the filter still needs between calls, so cutting a signal into chunks of any size gives
the same output as resampling it whole, and block boundaries leave no clicks.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

import numpy as np

_MAX_OUT_PER_PASS = 8192  # bounds the (outputs, taps, channels) gather array of one pass


@dataclass(frozen=True)
class ResampleFilter:
    """The anti-aliasing low-pass: Kaiser-windowed sinc.

    zero_crossings: sinc lobes on each side (more: sharper cut, more taps per output frame).
    beta: Kaiser window shape (higher: deeper stopband, wider transition).
    rolloff: cutoff as a fraction of the lower Nyquist frequency (below 1 keeps aliasing out).
    """

    zero_crossings: int = 16
    beta: float = 8.0
    rolloff: float = 0.95


class StreamResampler:
    """Resample (frames, channels) blocks from `in_rate` to `out_rate`, keeping state across calls."""

    def __init__(
        self, in_rate: int, out_rate: int, channels: int, filt: ResampleFilter | None = None
    ) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"rates must be positive, got {in_rate} -> {out_rate}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.channels = int(channels)
        self.filter = filt or ResampleFilter()
        g = gcd(self.in_rate, self.out_rate)
        self.up = self.out_rate // g
        self.down = self.in_rate // g
        self.identity = self.up == self.down
        if self.identity:
            self.taps = np.ones(1)
            self._phases = np.ones((1, 1))
        else:
            self.taps = _design(self.up, self.down, self.filter)
            per_phase = -(-len(self.taps) // self.up)
            padded = np.zeros(per_phase * self.up)
            padded[: len(self.taps)] = self.taps
            # _phases[p, t] = taps[p + t * up]: the sub-filter that computes outputs of phase p.
            self._phases = padded.reshape(per_phase, self.up).T.copy()
        self._per_phase = self._phases.shape[1]
        self._tap_offsets = np.arange(self._per_phase)
        self.reset()

    @property
    def latency_frames(self) -> float:
        """Delay the (linear-phase) filter adds, in output frames."""
        if self.identity:
            return 0.0
        return (len(self.taps) - 1) / 2 / self.down

    def reset(self) -> None:
        """Forget the past: the next call starts a new signal (preceded by silence)."""
        self._hist = np.zeros((self._per_phase - 1, self.channels))
        self._n_in = 0  # input frames consumed since reset
        self._m_next = 0  # next output frame index

    def snapshot(self) -> tuple:
        """The filter's memory, to `restore` and resample the same input again to the same output."""
        return (self._hist.copy(), self._n_in, self._m_next)

    def restore(self, snap: tuple) -> None:
        hist, self._n_in, self._m_next = snap
        self._hist = hist.copy()

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample the next chunk; returns the output frames it completes (float32, may be empty).

        At equal rates this is the input itself as float32 (no copy when it already is)."""
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected a (frames, {self.channels}) block, got shape {x.shape}")
        if self.identity:
            return np.asarray(x, dtype=np.float32)
        return self._run(np.asarray(x, dtype=np.float64))

    def flush(self) -> np.ndarray:
        """Return the filter's tail (what the last input still contributes) and reset for a new signal."""
        if self.identity:
            return np.zeros((0, self.channels), dtype=np.float32)
        tail = self._run(np.zeros((self._per_phase - 1, self.channels)))
        self.reset()
        return tail

    def _run(self, x: np.ndarray) -> np.ndarray:
        keep = self._per_phase - 1
        buf = np.concatenate([self._hist, x]) if keep else x
        base = self._n_in - keep  # input index of buf[0]
        n_total = self._n_in + len(x)
        # Output m needs inputs up to floor(m * down / up); all of those are here iff that is < n_total.
        m_end = -(-(self.up * n_total) // self.down)
        parts = []
        for m0 in range(self._m_next, m_end, _MAX_OUT_PER_PASS):
            m = np.arange(m0, min(m0 + _MAX_OUT_PER_PASS, m_end))
            pos = m * self.down
            newest = pos // self.up - base  # buf index of the newest input each output uses
            gathered = buf[newest[:, None] - self._tap_offsets[None, :]]  # (outputs, taps, channels)
            parts.append(np.einsum("mt,mtc->mc", self._phases[pos % self.up], gathered))
        self._m_next = max(self._m_next, m_end)
        self._n_in = n_total
        self._hist = buf[len(buf) - keep :].copy()
        if not parts:
            return np.zeros((0, self.channels), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)


def _design(up: int, down: int, filt: ResampleFilter) -> np.ndarray:
    """Low-pass taps at the upsampled rate, gain `up` so the zero-stuffed signal keeps its level."""
    from scipy.signal import firwin

    widest = max(up, down)
    numtaps = 2 * filt.zero_crossings * widest + 1
    return firwin(numtaps, filt.rolloff / widest, window=("kaiser", filt.beta)) * up
