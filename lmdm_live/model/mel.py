"""A fixed log-mel representation, grouped into tokens the DiT can afford.

Why a fixed one: a small autoencoder trained briefly on a CPU blurs the harmonic comb away and loses the
melody's pitch; a mel spectrogram keeps the low harmonics by construction and leaves the sharp detail to
the diffusion model, which draws it where regression blurs. 128 bands at hop 512 (86 frames/s at 44.1
kHz) are grouped four at a time into one token: 21.5 tokens/s, each 4 x 128 = 512 values wide.

Frames are centred on multiples of `hop` with zeros before the start, so an encoding is the same whether
the audio came whole or as the continuation of silence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 44100
    n_fft: int = 2048
    hop: int = 512  # samples per mel frame
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None  # None: Nyquist
    group: int = 4  # mel frames per token
    log_floor: float = 1e-10
    # log-mel -> token: (log_mel - shift) / scale, so tokens have about unit variance on music
    shift: float = -5.0
    scale: float = 2.5
    # ln of a mel band power music does not reach: the renders peak at 10.6, a full-scale sine at 11.8-12.2.
    # Decoding caps there, so a generated token far out of range (log power: its error is exponential) is
    # loud at worst, never 80 dB over full scale
    log_ceiling: float = 12.0

    def __post_init__(self) -> None:
        if self.n_fft % self.hop or self.n_fft // self.hop < 2:
            raise ValueError(
                f"n_fft ({self.n_fft}) must be a multiple of hop ({self.hop}), at least twice it"
            )
        if self.group < 1 or self.n_mels < 8:
            raise ValueError("group >= 1 and n_mels >= 8 are required")

    @property
    def token_hop(self) -> int:
        """Audio samples per token."""
        return self.hop * self.group

    @property
    def token_dim(self) -> int:
        return self.n_mels * self.group

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MelConfig:
        return cls(**d)


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(cfg: MelConfig) -> Tensor:
    """(n_mels, n_bins) triangular filters, equal-area (each band averages its bins' magnitudes).

    Every band is at least one bin wide where the mel scale is finer than the FFT's bins, so no band is
    empty and the inverse stays well posed."""
    fmax = cfg.fmax or cfg.sample_rate / 2
    bins = torch.linspace(0, cfg.sample_rate / 2, cfg.n_bins, dtype=torch.float64)
    edges = _mel_to_hz(
        torch.linspace(
            float(_hz_to_mel(torch.tensor(cfg.fmin))), float(_hz_to_mel(torch.tensor(fmax))), cfg.n_mels + 2
        ).double()
    )
    bin_hz = cfg.sample_rate / cfg.n_fft
    fb = torch.zeros(cfg.n_mels, cfg.n_bins, dtype=torch.float64)
    for m in range(cfg.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        lo, hi = min(lo, mid - bin_hz), max(hi, mid + bin_hz)  # at least one bin either side
        up = (bins - lo) / (mid - lo)
        down = (hi - bins) / (hi - mid)
        fb[m] = torch.clamp(torch.minimum(up, down), min=0.0)
    fb /= fb.sum(dim=1, keepdim=True)
    return fb.float()


def hann(n_fft: int) -> Tensor:
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float32)


def frames_of(audio: Tensor, cfg: MelConfig, n_frames: int) -> Tensor:
    """(B, N) -> (B, n_frames, n_fft) windowed frames centred on t*hop, zeros outside the audio."""
    pad = cfg.n_fft // 2
    need = (n_frames - 1) * cfg.hop + cfg.n_fft
    x = torch.nn.functional.pad(audio, (pad, max(need - pad - audio.shape[-1], 0)))[..., :need]
    return x.unfold(-1, cfg.n_fft, cfg.hop) * hann(cfg.n_fft).to(audio)


class MelAnalysis(torch.nn.Module):
    """Audio -> normalised log-mel frames -> tokens, and back from tokens to mel magnitudes."""

    def __init__(self, cfg: MelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("fb", mel_filterbank(cfg), persistent=False)

    def magnitude(self, audio: Tensor) -> Tensor:
        """(B, N) -> (B, n_bins, N // hop) STFT magnitudes."""
        n = audio.shape[-1] // self.cfg.hop
        return torch.fft.rfft(frames_of(audio, self.cfg, n), dim=-1).abs().transpose(1, 2)

    def log_mel(self, audio: Tensor) -> Tensor:
        """(B, N) -> (B, n_mels, N // hop) normalised log-mel of power.

        Power, not magnitude: a band's energy survives the inverse whether its bins held one harmonic
        or noise, so the treble's share of the energy (the roll-off) is kept."""
        mel = torch.einsum("mf,bft->bmt", self.fb.to(audio), self.magnitude(audio) ** 2)
        return (torch.log(mel.clamp(min=self.cfg.log_floor)) - self.cfg.shift) / self.cfg.scale

    def mel_power(self, log_mel: Tensor) -> Tensor:
        """Normalised log-mel -> mel band powers (what the filterbank gave), capped at `log_ceiling`."""
        return torch.exp((log_mel * self.cfg.scale + self.cfg.shift).clamp(max=self.cfg.log_ceiling))

    def to_tokens(self, log_mel: Tensor) -> Tensor:
        """(B, n_mels, T) -> (B, group * n_mels, T // group): consecutive frames side by side."""
        b, m, t = log_mel.shape
        g = self.cfg.group
        t -= t % g
        x = log_mel[..., :t].reshape(b, m, t // g, g).permute(0, 3, 1, 2)
        return x.reshape(b, g * m, t // g)

    def from_tokens(self, tokens: Tensor) -> Tensor:
        """(B, group * n_mels, T) -> (B, n_mels, T * group)."""
        b, _, t = tokens.shape
        g, m = self.cfg.group, self.cfg.n_mels
        return tokens.reshape(b, g, m, t).permute(0, 2, 3, 1).reshape(b, m, t * g)


def nnls_magnitude(fb: Tensor, mel: Tensor, iters: int = 12) -> Tensor:
    """Non-negative STFT magnitudes whose mel is `mel` (B, n_mels, T) -> (B, n_bins, T).

    Multiplicative updates from the transposed filterbank's spread: each keeps the estimate
    non-negative and lowers ||fb @ S - mel||, without the negative lobes a pseudo-inverse leaves."""
    fbt = fb.t().contiguous()
    spread = fbt / fbt.sum(dim=1, keepdim=True).clamp(min=1e-8)
    s = torch.einsum("fm,bmt->bft", spread, mel)
    num = torch.einsum("fm,bmt->bft", fbt, mel)
    eps = 1e-10
    for _ in range(iters):
        den = torch.einsum("fm,bmt->bft", fbt, torch.einsum("mf,bft->bmt", fb, s))
        s = s * num / (den + eps)
    return s


def overlap_add(frames: Tensor, hop: int) -> Tensor:
    """(B, T, n) frames -> (B, (T-1)*hop + n) summed at their offsets.

    With n a multiple of hop, each frame is n/hop hop-long pieces, and the sum is n/hop shifted adds of
    whole (B, T, hop) slabs: far cheaper than a general fold."""
    b, t, n = frames.shape
    if n % hop:
        return torch.nn.functional.fold(
            frames.transpose(1, 2), output_size=(1, (t - 1) * hop + n), kernel_size=(1, n), stride=(1, hop)
        ).reshape(b, -1)
    r = n // hop
    pieces = frames.reshape(b, t, r, hop)
    out = frames.new_zeros(b, t + r - 1, hop)
    for k in range(r):
        out[:, k : k + t] += pieces[:, :, k]
    return out.reshape(b, -1)


def phase_advance(n_bins: int, hop: int, n_fft: int) -> Tensor:
    """Per-bin phase a stationary sinusoid at the bin's centre advances in one hop."""
    return 2 * math.pi * torch.arange(n_bins) * hop / n_fft


def synthesise(frames: Tensor, n_fft: int, hop: int) -> Tensor:
    """Complex STFT frames (B, T, n_bins) -> their windowed inverse FFTs overlap-added, (B, (T-1)*hop +
    n_fft): the numerator of a least-squares synthesis; divide by `window_sum` where it is complete."""
    return overlap_add(torch.fft.irfft(frames, n=n_fft, dim=-1) * hann(n_fft).to(frames.real), hop)


def window_sum(n_frames: int, hop: int, window: Tensor) -> Tensor:
    """Σ_t w² of `n_frames` frames overlap-added: what a synthesis divides by (exact at the edges too)."""
    return overlap_add((window**2).expand(1, n_frames, -1), hop)[0]
