"""From the model's audio to the device's: gain ramped over a block, the peak limiter, channels, the rate
conversion, and the crossfade a remade block is spliced in with. Runs on the inference thread, never in
the audio callback.
"""

from __future__ import annotations

import numpy as np

from ..audio.resample import StreamResampler
from ..dsp.limiter import Limiter, LimiterConfig


class OutputChain:
    """Model audio (channels, n) at the model rate -> device frames (m, out_channels) at the device rate.

    Shared by the live engine and `replay`, so both produce the same samples. A short tail is held back
    from every block, so a failed block can fade out what was already generated instead of clicking; the
    limiter (None: off) looks ahead into that tail, so it adds no latency.
    """

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        out_channels: int,
        fade_ms: float = 10.0,
        limiter: LimiterConfig | None = None,
    ) -> None:
        self.in_rate, self.out_rate, self.out_channels = in_rate, out_rate, out_channels
        self.fade = max(1, int(round(fade_ms * in_rate / 1000)))
        self.limiter = Limiter(in_rate, limiter) if limiter is not None else None
        self.resampler = StreamResampler(in_rate, out_rate, out_channels)
        self._tail: np.ndarray | None = None  # (fade, channels) held back, model rate
        self._fade_in = False
        self.gain = 1.0
        self._gain_now = 1.0

    def _channels(self, x: np.ndarray) -> np.ndarray:
        """(n, c) -> (n, out_channels): duplicate mono, average down to mono, else take/tile channels."""
        c, want = x.shape[1], self.out_channels
        if c == want:
            return x
        if c == 1:
            return np.repeat(x, want, axis=1)
        if want == 1:
            return x.mean(axis=1, keepdims=True)
        return np.resize(x.T, (want, x.shape[0])).T.copy()

    def _finish(self, x: np.ndarray, ahead: np.ndarray | None = None) -> np.ndarray:
        """Gain (a short ramp when it changed: audible at once, without a click), the limiter (reading
        `ahead`, the held tail, at the new gain), then the device rate."""
        if x.shape[0]:
            if self._gain_now != self.gain:
                n = min(self.fade, x.shape[0])
                g = np.full((x.shape[0], 1), self.gain, np.float32)
                g[:n, 0] = np.linspace(self._gain_now, self.gain, n, dtype=np.float32)
                x = x * g
                self._gain_now = self.gain
            elif self.gain != 1.0:
                x = x * np.float32(self.gain)
            if self.limiter is not None:
                if ahead is not None and self.gain != 1.0:
                    ahead = ahead * np.float32(self.gain)
                x = self.limiter.process(x, ahead)
        return self.resampler.process(np.ascontiguousarray(x, dtype=np.float32))

    def push(self, audio: np.ndarray) -> np.ndarray:
        """A good block: emit the held tail and all but the last `fade` samples of this one."""
        x = self._channels(np.ascontiguousarray(audio.T, dtype=np.float32))
        if self._tail is None:
            self._tail = np.zeros((0, x.shape[1]), np.float32)
        if self._fade_in and x.shape[0]:
            n = min(self.fade, x.shape[0])
            x = x.copy()
            x[:n] *= np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
            self._fade_in = False
        joined = np.concatenate([self._tail, x])
        keep = min(self.fade, joined.shape[0])
        out, self._tail = joined[: joined.shape[0] - keep], joined[joined.shape[0] - keep :]
        return self._finish(out, self._tail)

    def snapshot(self) -> tuple:
        """What the next block's output depends on: the held tail, the fade-in, gains, the limiter's gain,
        the resampler."""
        tail = None if self._tail is None else self._tail.copy()
        lim = self.limiter.snapshot() if self.limiter is not None else None
        return (tail, self._fade_in, self.gain, self._gain_now, lim, self.resampler.snapshot())

    def restore(self, snap: tuple) -> None:
        tail, self._fade_in, self.gain, self._gain_now, lim, resampler = snap
        self._tail = None if tail is None else tail.copy()
        if self.limiter is not None and lim is not None:
            self.limiter.restore(lim)
        self.resampler.restore(resampler)

    def fail(self, samples: int) -> np.ndarray:
        """A failed block of `samples` model-rate samples: fade the held tail to silence, then silence."""
        ch = self.out_channels
        tail = self._tail if self._tail is not None else np.zeros((0, ch), np.float32)
        faded = (
            tail * np.linspace(1.0, 0.0, tail.shape[0], dtype=np.float32)[:, None] if tail.shape[0] else tail
        )
        out = np.concatenate([faded, np.zeros((max(samples - tail.shape[0], 0), ch), np.float32)])
        self._tail = np.zeros((0, ch), np.float32)
        self._fade_in = True
        return self._finish(out)


def splice_frames(old: np.ndarray, new: np.ndarray, at: int, fade: int) -> np.ndarray:
    """The block as heard when a change cuts into it at frame `at`: the old version up to there, `fade`
    frames of crossfade, then the new version made from the same boundary with the change. Shared by the
    engine and `replay`, so both produce the same samples."""
    out = new.copy()
    at = min(at, new.shape[0], old.shape[0])
    out[:at] = old[:at]
    k = min(fade, new.shape[0] - at, old.shape[0] - at)
    if k > 0:
        ramp = (np.arange(1, k + 1, dtype=np.float32) / (k + 1))[:, None]
        out[at : at + k] = old[at : at + k] * (1 - ramp) + new[at : at + k] * ramp
    return out
