"""Sketch controls: pitch, voicing, loudness and brightness curves from a hummed, sung or played signal.

A sketch steers the model with what a player can do with a voice or an instrument, so the curves live on
the model's latent frame grid: frame i covers samples [i*hop, (i+1)*hop) at the model's sample rate. Pitch
comes from swift-f0 (a small ONNX network at 16 kHz with a 256-sample hop). Its frames are final only
once it has seen 10 later ones, so the stream lags the audio by `SketchTracker.latency_samples` (2560
samples, 160 ms, at 16 kHz with hop 512). The offline curves are the stream run over the signal followed
by silence, so a live take and its offline analysis give the same frames however the audio was chunked.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import resample_poly
from swift_f0 import SAMPLE_RATE as F0_RATE
from swift_f0 import PitchStream, SwiftF0
from swift_f0.core import HOP as F0_HOP
from swift_f0.core import LOOKAHEAD_FRAMES as F0_LOOKAHEAD

_OFFLINE_BLOCK_S = 30  # offline audio is pushed in blocks of this many seconds, which bounds memory


@dataclass(frozen=True)
class SketchConfig:
    """How the curves are computed.

    median: causal median filter over the last `median` frames (odd, 1 = off); pitch is filtered over
        the voiced frames among them only, so a gap never drags a note towards 0. It removes glitches of
        up to (median - 1) / 2 frames and, being causal, delays changes by as many frames (64 ms at the
        defaults).
    confidence: swift-f0 confidence below which a frame is unvoiced (silence and breath never become pitch).
    min_db: frames quieter than this are unvoiced too.
    floor_db: loudness is clipped here; a frame at the floor is silent (centroid 0).
    """

    sample_rate: int = 16000
    hop: int = 512
    median: int = 5
    confidence: float = 0.5
    min_db: float = -50.0
    floor_db: float = -80.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "hop", "median"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.median % 2 == 0:
            raise ValueError(f"median must be odd (1 = off), got {self.median}")
        for name in ("confidence", "min_db", "floor_db"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within [0, 1], got {self.confidence}")
        if not self.floor_db < 0.0:
            raise ValueError(f"floor_db must be below 0 dBFS, got {self.floor_db}")
        if self.min_db < self.floor_db:
            raise ValueError(f"min_db ({self.min_db}) must not be below floor_db ({self.floor_db})")


_FIELDS = ("pitch_midi", "voiced", "loudness_db", "centroid_hz")


@dataclass(frozen=True)
class Controls:
    """Control curves on the latent frame grid; every field is a float32 array of shape (n_frames,).

    pitch_midi: fractional MIDI note number, 0.0 where unvoiced.
    voiced: 1.0 / 0.0 after the confidence and loudness gate.
    loudness_db: RMS level of the frame in dBFS (a full-scale sine reads -3 dB), clipped at floor_db.
    centroid_hz: magnitude-spectrum centroid of the Hann-windowed frame, 0 for silent frames.
    """

    pitch_midi: np.ndarray
    voiced: np.ndarray
    loudness_db: np.ndarray
    centroid_hz: np.ndarray

    def __post_init__(self) -> None:
        arrays = [np.asarray(getattr(self, name), dtype=np.float32) for name in _FIELDS]
        if any(a.ndim != 1 for a in arrays) or len({len(a) for a in arrays}) != 1:
            raise ValueError(f"controls must be 1-D arrays of one length, got {[a.shape for a in arrays]}")
        for name, a in zip(_FIELDS, arrays):
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return len(self.pitch_midi)

    def as_array(self) -> np.ndarray:
        """(4, n) float32 in the order pitch_midi, voiced, loudness_db, centroid_hz."""
        return np.stack([getattr(self, name) for name in _FIELDS])

    @classmethod
    def empty(cls) -> Controls:
        return cls(*(np.zeros(0, np.float32) for _ in _FIELDS))

    @classmethod
    def concat(cls, parts: Iterable[Controls]) -> Controls:
        """Join consecutive pieces of one stream (no pieces: 0 frames)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS))


_detector: SwiftF0 | None = None
_detector_lock = threading.Lock()


def _shared_detector() -> SwiftF0:
    """One swift-f0 model per process: building it is slow-ish and its `detect` is thread-safe."""
    global _detector
    with _detector_lock:
        if _detector is None:
            # One thread and no busy-waiting: the tracker runs on the inference thread, next to torch's
            # own threads and the audio callback, and a block's 186 ms of input takes it about 10 ms.
            _detector = SwiftF0(threads=1, spin=False)
        return _detector


def _check_audio(audio: np.ndarray, what: str = "audio") -> np.ndarray:
    a = np.asarray(audio)
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D mono, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what} must be a float array (samples in -1..1), got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contains NaN or inf")
    return a


class _StreamResample:
    """`resample_poly` from `rate` to 16 kHz, chunk by chunk, giving exactly the whole-signal output.

    Each pass resamples a segment that starts on a multiple of `down` input samples (so its output grid
    is the whole signal's) with `ctx` samples of context on each side of the outputs it keeps; an output
    is handed out once its right context has arrived."""

    def __init__(self, rate: int) -> None:
        g = math.gcd(rate, F0_RATE)
        self.up, self.down = F0_RATE // g, rate // g
        # resample_poly's filter reaches 10 * max(up, down) upsampled samples each way.
        self.ctx = -(-10 * max(self.up, self.down) // self.up) + 1
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0)
        self._start = 0  # input index of _buf[0]
        self._n_in = 0
        self._n_out = 0

    def final_outputs(self, n_in: int) -> int:
        """How many outputs are final once `n_in` input samples have arrived."""
        if self.up == self.down:
            return n_in
        return (n_in - self.ctx) * self.up // self.down + 1 if n_in >= self.ctx else 0

    def inputs_for(self, n_out: np.ndarray) -> np.ndarray:
        """Fewest input samples after which `n_out` (>= 1) outputs are final."""
        if self.up == self.down:
            return n_out
        return self.ctx - ((1 - n_out) * self.down // self.up)

    def push(self, x: np.ndarray) -> np.ndarray:
        if self.up == self.down:
            return x
        self._buf = np.concatenate([self._buf, x])
        self._n_in += len(x)
        m0, m1 = self._n_out, self.final_outputs(self._n_in)
        if m1 <= m0:
            return np.zeros(0)
        s = self._segment_start(m0)
        y = resample_poly(self._buf[s - self._start :], self.up, self.down)
        offset = s // self.down * self.up
        out = y[m0 - offset : m1 - offset]
        self._n_out = m1
        keep = self._segment_start(m1)
        self._buf = self._buf[keep - self._start :]
        self._start = keep
        return out

    def _segment_start(self, m: int) -> int:
        """The latest multiple of `down` that leaves `ctx` input samples before output m."""
        return max(0, (m * self.down - self.ctx * self.up) // (self.up * self.down)) * self.down


class SketchTracker:
    """Streaming and causal: push audio chunks of any size, get the newly completed frames.

    Frame i comes out once `latency_samples` samples past its end have been pushed (at the latest);
    pushing one signal in any chunking gives the same frames, equal to `control_curves` of it. A push
    that completes pitch frames runs the pitch network over its whole receptive field (about 6000 samples
    at 16 kHz), so larger chunks cost less per second of audio."""

    def __init__(self, cfg: SketchConfig = SketchConfig()) -> None:
        if not isinstance(cfg, SketchConfig):
            raise ValueError(f"cfg must be a SketchConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._detector = _shared_detector()
        self._resample = _StreamResample(cfg.sample_rate)
        self._n_fft = 1 << (cfg.hop - 1).bit_length()
        self._window = np.hanning(cfg.hop + 1)[:-1] if cfg.hop > 1 else np.ones(1)
        self._freqs = np.fft.rfftfreq(self._n_fft, 1.0 / cfg.sample_rate)
        # Latent frame i spans [i, i+1) * num/den pitch frames (the pitch frames are centred on k*256).
        self._num, self._den = cfg.hop * F0_RATE, cfg.sample_rate * F0_HOP
        self._width = -(-self._num // self._den)  # the most pitch frames one latent frame holds
        self.latency_samples = self._latency()
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next push starts a new signal."""
        self._resample.reset()
        self._pitch = PitchStream(self._detector)
        self._audio = np.zeros(0)
        self._audio_start = 0  # sample index of _audio[0]
        self._n_in = 0
        self._f0_hz = np.zeros(0)
        self._f0_conf = np.zeros(0)
        self._f0_start = 0  # pitch frame index of _f0_hz[0]
        self._next = 0  # next latent frame to emit
        tail = self.cfg.median - 1
        self._hist = np.full((3, tail), np.nan)  # raw pitch (nan: unvoiced), loudness, centroid

    def push(self, chunk: np.ndarray) -> Controls:
        """Feed the next samples; returns the frames they complete (possibly 0)."""
        x = _check_audio(chunk, "chunk")
        if len(x) == 0:
            return Controls.empty()
        self._audio = np.concatenate([self._audio, x])
        self._n_in += len(x)
        x16 = self._resample.push(x)
        if len(x16):
            res = self._pitch.push(x16.astype(np.float32), F0_RATE)
            self._f0_hz = np.concatenate([self._f0_hz, res.pitch_hz])
            self._f0_conf = np.concatenate([self._f0_conf, res.confidence])
        return self._emit()

    def _pitch_frames(self, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First pitch frame and count of pitch frames whose centre lies in latent frame i (at least 1:
        when none does, the one nearest its centre)."""
        ka = -((-i * self._num) // self._den)
        kb = -((-(i + 1) * self._num) // self._den)
        nearest = ((2 * i + 1) * self._num + self._den) // (2 * self._den)
        empty = kb <= ka
        return np.where(empty, nearest, ka), np.where(empty, 1, kb - ka)

    def _latency(self) -> int:
        """Worst case over frames of the samples pushed after a frame's end until it comes out."""
        # Frame-to-pitch-frame and resampler patterns together repeat within `period` frames; past a
        # few thousand frames, looking further would only cost time.
        period = self._den // math.gcd(self._num, self._den) * self._resample.up
        i = np.arange(min(period, 1 << 14), dtype=np.int64)
        start, count = self._pitch_frames(i)
        # Pitch frame k is final once (k + 1 + lookahead) hops of 16 kHz audio exist.
        need = self._resample.inputs_for((start + count + F0_LOOKAHEAD) * F0_HOP)
        ends = (i + 1) * self.cfg.hop
        return int(np.maximum(need - ends, 0).max())

    def _emit(self) -> Controls:
        cfg = self.cfg
        n_f0 = self._f0_start + len(self._f0_hz)
        i = np.arange(self._next, self._n_in // cfg.hop, dtype=np.int64)
        start, count = self._pitch_frames(i)
        i = i[: int(np.searchsorted(start + count, n_f0, side="right"))]
        if len(i) == 0:
            return Controls.empty()
        start, count = start[: len(i)], count[: len(i)]

        # Loudness and centroid from the frame's own samples.
        a0 = int(i[0]) * cfg.hop - self._audio_start
        frames = self._audio[a0 : a0 + len(i) * cfg.hop].reshape(len(i), cfg.hop)
        rms = np.sqrt(np.mean(np.square(frames), axis=1))
        loud = np.maximum(20 * np.log10(np.maximum(rms, 1e-30)), cfg.floor_db)
        mag = np.abs(np.fft.rfft(frames * self._window, n=self._n_fft, axis=1))
        total = mag.sum(axis=1)
        silent = (loud <= cfg.floor_db) | (total <= 0)
        cent = np.where(silent, 0.0, (mag @ self._freqs) / np.where(silent, 1.0, total))

        # Pitch: the confident pitch frames inside each latent frame, robustly pooled.
        cols = start[:, None] + np.arange(self._width)[None, :]
        valid = np.arange(self._width)[None, :] < count[:, None]
        idx = np.where(valid, cols, start[:, None]) - self._f0_start
        hz, conf = self._f0_hz[idx], np.where(valid, self._f0_conf[idx], 0.0)
        confident = conf >= cfg.confidence
        voiced = confident.any(axis=1) & (loud >= cfg.min_db)
        midi = 69.0 + 12.0 * np.log2(np.maximum(hz, 1e-6) / 440.0)
        raw_pitch = np.where(voiced, _pooled_pitch(midi, np.where(confident, conf, 0.0)), np.nan)

        # Causal median over the last `median` frames, carried across pushes.
        filt, self._hist = _causal_median(np.stack([raw_pitch, loud, cent]), self._hist)
        pitch_f, loud_f, cent_f = np.nan_to_num(filt[0]), filt[1], filt[2]

        # Drop what no later frame needs.
        self._next = int(i[-1]) + 1
        cut = self._next * cfg.hop - self._audio_start
        self._audio, self._audio_start = self._audio[cut:], self._audio_start + cut
        k = int(self._pitch_frames(np.array([self._next]))[0][0]) - self._f0_start
        self._f0_hz, self._f0_conf, self._f0_start = self._f0_hz[k:], self._f0_conf[k:], self._f0_start + k
        return Controls(pitch_f, voiced.astype(np.float32), loud_f, cent_f)


def _causal_median(rows: np.ndarray, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of each value with the kernel-1 before it (nan: skipped; a nan value stays nan).

    rows: (c, n) new values; hist: (c, kernel - 1) the values before them (nan before the start).
    Returns the filtered rows and the history for the next call."""
    both = np.concatenate([hist, rows], axis=1)
    win = sliding_window_view(both, hist.shape[1] + 1, axis=1)  # (c, n, kernel)
    srt = np.sort(win, axis=-1)  # nan sorts last
    count = np.maximum((~np.isnan(win)).sum(axis=-1, keepdims=True), 1)
    lo = np.take_along_axis(srt, (count - 1) // 2, axis=-1)[..., 0]
    hi = np.take_along_axis(srt, count // 2, axis=-1)[..., 0]
    out = np.where(np.isnan(rows), np.nan, 0.5 * (lo + hi))
    return out, both[:, both.shape[1] - hist.shape[1] :]


def _pooled_pitch(midi: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per row: the confidence-weighted mean of the pitches within a semitone of their weighted median,
    so one stray octave among a frame's pitch frames is ignored rather than averaged in."""
    order = np.argsort(np.where(weight > 0, midi, np.inf), axis=1)
    m, w = np.take_along_axis(midi, order, 1), np.take_along_axis(weight, order, 1)
    cum = np.cumsum(w, axis=1)
    half = 0.5 * cum[:, -1:]
    k = np.minimum((cum < half).sum(axis=1), midi.shape[1] - 1)
    med = m[np.arange(len(m)), k][:, None]
    w_near = weight * (np.abs(midi - med) <= 1.0)
    w_near = np.where(w_near.sum(axis=1, keepdims=True) > 0, w_near, 1.0)
    return (w_near * midi).sum(axis=1) / w_near.sum(axis=1)


def control_curves(audio: np.ndarray, cfg: SketchConfig = SketchConfig()) -> Controls:
    """Offline: mono float audio at cfg.sample_rate -> floor(len/hop) frames.

    The signal is streamed through a `SketchTracker` and followed by silence, so these are exactly the
    frames a live tracker would give."""
    if not isinstance(cfg, SketchConfig):
        raise ValueError(f"cfg must be a SketchConfig, got {type(cfg).__name__}")
    x = _check_audio(audio)
    n = len(x) // cfg.hop
    if n == 0:
        return Controls.empty()
    tracker = SketchTracker(cfg)
    block = _OFFLINE_BLOCK_S * cfg.sample_rate
    parts = [tracker.push(x[s : s + block]) for s in range(0, len(x), block)]
    parts.append(tracker.push(np.zeros(tracker.latency_samples + cfg.hop)))
    out = Controls.concat(parts)
    return Controls(*(a[:n] for a in out.as_array()))
