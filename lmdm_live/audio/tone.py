"""A test tone: make one (`sine_frames`, `ToneFeeder`) and recognise one (`dominant_hz`, `locate`).

Checking an audio path end to end needs a signal whose every sample is known: each sample here is a pure
function of its absolute frame index, so a recording can be matched against it exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from .ring import AudioRing


def sine_frames(
    start: int, frames: int, rate: int, freqs: Sequence[float], amp: float = 0.5, phase: float = 0.5
) -> np.ndarray:
    """Frames [start, start + frames) of a sine per channel (channel i at freqs[i]), float32.

    The default phase is not 0, so the very first sample is already non-zero."""
    t = (start + np.arange(frames, dtype=np.float64))[:, None] / rate
    f = np.asarray(freqs, dtype=np.float64)[None, :]
    return (amp * np.sin(2 * np.pi * f * t + phase)).astype(np.float32)


class ToneFeeder:
    """A producer thread that keeps `ring` topped up with `sine_frames`, like an inference thread would."""

    def __init__(
        self, ring: AudioRing, rate: int, freqs: Sequence[float], amp: float = 0.5, chunk: int = 512
    ) -> None:
        if len(freqs) != ring.channels:
            raise ValueError(f"{len(freqs)} frequencies for a {ring.channels}-channel ring")
        self.ring, self.rate, self.freqs, self.amp, self.chunk = ring, rate, tuple(freqs), amp, chunk
        self.frames = 0  # frames written so far (= the next frame's index)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prime(self) -> None:
        """Fill the ring completely (before the consumer starts)."""
        self._write(self.ring.free)

    def _write(self, n: int) -> None:
        if n > 0:
            self.frames += self.ring.write(sine_frames(self.frames, n, self.rate, self.freqs, self.amp))

    def _run(self) -> None:
        nap = self.chunk / self.rate / 4
        while not self._stop.is_set():
            if self.ring.free >= self.chunk:
                self._write(self.ring.free)
            time.sleep(nap)

    def start(self) -> ToneFeeder:
        self._thread = threading.Thread(target=self._run, name="lmdm-tone", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def dominant_hz(x: np.ndarray, rate: int) -> float:
    """Frequency of the strongest spectral peak of a mono signal (Hann window, parabolic interpolation)."""
    x = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    k = int(np.argmax(spec))
    if 0 < k < len(spec) - 1:
        a, b, c = np.log(spec[k - 1 : k + 2] + 1e-30)
        denom = a - 2 * b + c
        k = k + (0.5 * (a - c) / denom if denom != 0 else 0.0)
    return float(k * rate / len(x))


def locate(reference: np.ndarray, recorded: np.ndarray) -> int | None:
    """The offset at which `recorded` appears sample for sample inside `reference`, or None.

    Proves a path delivered a contiguous stretch of the signal: no frame dropped, repeated or altered."""
    if len(recorded) == 0 or len(recorded) > len(reference):
        return None
    first = recorded[0]
    candidates = np.nonzero(np.all(reference[: len(reference) - len(recorded) + 1] == first, axis=1))[0]
    for c in candidates:
        if np.array_equal(reference[c : c + len(recorded)], recorded):
            return int(c)
    return None
