"""Audio features in plain torch: a log-mel spectrogram and an onset-strength envelope.

No torchaudio or librosa: the mel filterbank is a few lines, and keeping it here means the classifier,
the tempo estimator and the training-data checks all see exactly the same features.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class MelConfig:
    """n_fft 2048 at 16 kHz gives 7.8 Hz bins, fine enough for 128 mel bands to tell a major from a minor
    third in the harmonics; hop 256 is 62.5 frames a second."""

    sample_rate: int = 16000
    n_fft: int = 2048
    hop: int = 256
    n_mels: int = 128
    fmin: float = 30.0
    fmax: float | None = None  # None: Nyquist
    top_db: float = 80.0  # floor each spectrogram this far below its own peak

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def _filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, each normalised to unit area so
    narrow low bands and wide high bands weigh energy alike."""
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    # a band narrower than one FFT bin still gets its nearest bin, so no band is identically zero
    empty = fb.sum(1) == 0
    if empty.any():
        nearest = np.abs(freqs[None] - mid[empty]).argmin(1)
        fb[np.where(empty)[0], nearest] = 1.0
    fb /= fb.sum(1, keepdims=True)
    return torch.from_numpy(fb.astype(np.float32))


def _as_tensor(audio) -> Tensor:
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32)) if not isinstance(audio, Tensor) else audio
    return x.float()


def mel_power(audio, cfg: MelConfig = MelConfig()) -> Tensor:
    """Mel power spectrogram of (..., samples) audio: (..., n_mels, frames)."""
    x = _as_tensor(audio)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    if x.shape[-1] < cfg.n_fft // 2 + 1:  # reflect padding needs at least half a window
        x = torch.nn.functional.pad(x, (0, cfg.n_fft // 2 + 1 - x.shape[-1]))
    window = torch.hann_window(cfg.n_fft, device=x.device)
    spec = torch.stft(x, cfg.n_fft, cfg.hop, window=window, center=True, return_complex=True)
    power = spec.real**2 + spec.imag**2
    fmax = cfg.fmax or cfg.sample_rate / 2
    fb = _filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, fmax).to(x.device)
    mel = fb @ power
    return mel.reshape(*lead, *mel.shape[-2:])


def log_mel(audio, cfg: MelConfig = MelConfig()) -> Tensor:
    """Log-mel spectrogram in dB, (..., n_mels, frames), floored `top_db` below each spectrogram's peak."""
    db = 10.0 * torch.log10(mel_power(audio, cfg).clamp_min(1e-10))
    peak = db.amax(dim=(-2, -1), keepdim=True)
    return torch.maximum(db, peak - cfg.top_db)


ONSET_MEL = MelConfig(n_fft=1024, hop=128, n_mels=64)  # 125 frames a second: finer beat timing


def onset_strength(audio, sample_rate: int, cfg: MelConfig | None = None) -> tuple[np.ndarray, float]:
    """Spectral flux of the log-mel spectrogram: how much louder each band got, summed, per frame.

    The envelope has its slowly varying part (a 0.5 s moving average) taken out and is half-wave
    rectified, so swells and fades do not read as onsets. Returns (envelope, frames per second).
    """
    cfg = cfg or ONSET_MEL
    if cfg.sample_rate != sample_rate:
        cfg = MelConfig(sample_rate, cfg.n_fft, cfg.hop, cfg.n_mels, cfg.fmin, cfg.fmax, cfg.top_db)
    x = _as_tensor(audio)
    if x.dim() > 1:  # channels -> mono
        x = x.reshape(-1, x.shape[-1]).mean(0)
    db = log_mel(x, cfg)
    flux = torch.relu(db[:, 1:] - db[:, :-1]).mean(0)
    flux = torch.cat([flux[:1] * 0, flux]).double().numpy()
    width = max(1, int(round(0.5 * cfg.frame_rate)))
    local = np.convolve(flux, np.ones(width) / width, mode="same")
    return np.maximum(flux - local, 0.0), cfg.frame_rate


@dataclass(frozen=True)
class ChromaConfig:
    """n_fft 4096 at 16 kHz gives 3.9 Hz bins: a semitone apart from about 70 Hz up. The same hop as
    MelConfig, so chroma frames line up with log-mel frames. Two bands: the bass (roots) and the rest."""

    sample_rate: int = 16000
    n_fft: int = 4096
    hop: int = 256
    bands: tuple[float, ...] = (65.0, 262.0, 2100.0)  # band edges in Hz: C2..C4, C4..C7
    gain: float = 10.0  # log compression: log1p(gain * level relative to the frame's loudest pitch class)


@lru_cache(maxsize=16)
def _chroma_fold(sr: int, n_fft: int, bands: tuple[float, ...]) -> Tensor:
    """(bands * 12, n_fft // 2 + 1): each FFT bin in a band, shared between its two nearest pitch classes
    by distance in semitones (triangular weights)."""
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    fold = np.zeros((len(bands) - 1, 12, len(freqs)))
    ok = freqs > 0
    pitch = np.zeros_like(freqs)
    pitch[ok] = 69.0 + 12.0 * np.log2(freqs[ok] / 440.0)  # MIDI pitch, C = 0 mod 12
    for b, (lo, hi) in enumerate(zip(bands[:-1], bands[1:])):
        inside = (freqs >= lo) & (freqs < hi)
        for pc in range(12):
            d = np.abs((pitch - pc + 6.0) % 12.0 - 6.0)  # circular distance to pitch class pc
            fold[b, pc] = np.where(inside, np.maximum(0.0, 1.0 - d), 0.0)
    return torch.from_numpy(fold.reshape(-1, len(freqs)).astype(np.float32))


def chroma(audio, cfg: ChromaConfig = ChromaConfig()) -> Tensor:
    """Log-compressed chroma of (..., samples) audio: (..., bands - 1, 12, frames), pitch class 0 = C.

    Each frame is relative to its own loudest pitch class (so loudness and crops do not matter), then
    log1p(gain * x) / log1p(gain) puts it in [0, 1]; near-silent frames stay near 0.
    """
    x = _as_tensor(audio)
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])
    if x.shape[-1] < cfg.n_fft // 2 + 1:
        x = torch.nn.functional.pad(x, (0, cfg.n_fft // 2 + 1 - x.shape[-1]))
    window = torch.hann_window(cfg.n_fft, device=x.device)
    spec = torch.stft(x, cfg.n_fft, cfg.hop, window=window, center=True, return_complex=True).abs()
    spec = spec / window.sum()  # a full-scale sine peaks near 0.5
    c = _chroma_fold(cfg.sample_rate, cfg.n_fft, tuple(cfg.bands)).to(x.device) @ spec
    c = c.reshape(x.shape[0], len(cfg.bands) - 1, 12, -1)
    ref = c.amax(dim=(1, 2), keepdim=True) + 1e-4  # -80 dB: silence does not blow up to full scale
    c = torch.log1p(cfg.gain * c / ref) / np.log1p(cfg.gain)
    return c.reshape(*lead, *c.shape[1:])
