"""A sketch as the codec's own tokens: what a plain harmonic tone at the sketched pitch and loudness encodes to.

Why: the sketch channels give the pitch as one number, `(midi - 60) / 12`, and through a linear input
projection a small DiT has to turn that number into a comb of harmonics across the token's mel bands. The
44.1 kHz model never learnt to (`eval sketch`: moving the melody a fifth cost it nothing). The tone channels
hand it the comb: per frame, the tokens a steady tone (harmonics at 1/h up to 8 kHz, a fixed timbre
whatever the input's) would encode to, at the sketch's pitch and loudness, silence where unvoiced. Following
a hum is then closer to copying where its energy lies than to computing it.

The tone is a function of the sketch channels alone (on, pitch, voiced, loudness; the centroid is left
out, the timbre is the prompt's), so every path that builds sketch channels (training windows, the live
stream, `eval sketch`'s variants) gets the same tone from them. A table of the tone's log-mel per quarter
semitone is built once per codec from the codec's own analysis.
"""

from __future__ import annotations

import math
import weakref

import torch
from torch import Tensor

from .mel import MelAnalysis

LOW_MIDI, HIGH_MIDI, STEPS_PER_SEMITONE = 24.0, 108.0, 4
HARMONICS_UP_TO_HZ = 8000.0
# the tone's tokens vary by about 4 (std over the hum's range, on the narrowed 44.1 kHz codec), its first
# direction by 15: a quarter brings them near the other extras' unit scale, so the new input weights'
# first steps do not swamp what the model already hears
TONE_GAIN = 0.25


class ToneMap:
    """Sketch channels (5, n) -> tone tokens (codec dim, n) for one log-mel codec."""

    def __init__(self, codec) -> None:
        if codec.cfg.inverse == "autoencoder":
            raise ValueError("tone channels are log-mel tokens; this codec's tokens are an autoencoder's")
        mel_cfg = codec.cfg.mel
        # the projection only (the codec itself is not held: the cache below is keyed by it, weakly)
        self.basis = codec.basis.clone() if codec.cfg.project else None
        self.group = mel_cfg.group
        self.floor = (math.log(mel_cfg.log_floor) - mel_cfg.shift) / mel_cfg.scale
        # ln power per dB, in the normalised log-mel's units: a tone L dB louder adds L * db_step
        self.db_step = math.log(10.0) / 10.0 / mel_cfg.scale
        self.table = tone_table(MelAnalysis(mel_cfg))  # (P, n_mels) at 0 dBFS RMS

    def log_mel(self, pitch_midi: Tensor, voiced: Tensor, loudness_db: Tensor) -> Tensor:
        """(n,) curves -> (n_mels, n) the tone's normalised log-mel (the floor where unvoiced)."""
        pos = ((pitch_midi.double() - LOW_MIDI) * STEPS_PER_SEMITONE).clamp(0, self.table.shape[0] - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=self.table.shape[0] - 1)
        w = (pos - lo).float()[:, None]
        m = self.table[lo] * (1 - w) + self.table[hi] * w + loudness_db.float()[:, None] * self.db_step
        m = m.clamp(min=self.floor)
        m = torch.where(voiced[:, None] > 0.5, m, torch.full_like(m, self.floor))
        return m.t()

    def tokens(self, sketch: Tensor) -> Tensor:
        """Sketch channels (5, n) (`extras.sketch_channels`, times any strength) -> (dim, n): the tone's
        tokens times TONE_GAIN and the on channel (0 where the sketch is off)."""
        on = sketch[0]
        scale = torch.where(on != 0, on, torch.ones_like(on))
        voiced = sketch[2] / scale
        pitch = torch.where(voiced > 0.5, 60.0 + 12.0 * sketch[1] / scale, torch.zeros_like(on))
        loudness = 20.0 * sketch[3] / scale - 40.0
        m = self.log_mel(pitch, voiced, loudness)  # (n_mels, n)
        full = m.repeat(self.group, 1)[None]  # a token is `group` frames side by side; each holds the frame
        if self.basis is not None:
            full = torch.einsum("kd,bkt->bdt", self.basis, full)
        return full[0] * (TONE_GAIN * on[None])


def harmonic_tone(f0: Tensor, n: int, sample_rate: int) -> Tensor:
    """(P,) fundamentals -> (P, n) steady tones, harmonics at 1/h up to 8 kHz, each at 1 (0 dBFS) RMS: the
    tone the table describes, as audio (to hear it, and to check the table against the codec)."""
    t = torch.arange(n, dtype=torch.float64) / sample_rate
    out = torch.zeros(f0.shape[0], n, dtype=torch.float64)
    for p, f in enumerate(f0.double().tolist()):
        h = torch.arange(1, int(min(HARMONICS_UP_TO_HZ, sample_rate / 2) / f) + 1, dtype=torch.float64)
        h = h[h * f < min(HARMONICS_UP_TO_HZ, sample_rate / 2)]
        out[p] = (torch.sin(2 * math.pi * torch.remainder(f * h[:, None] * t, 1.0)) / h[:, None]).sum(0)
    return (out / out.pow(2).mean(dim=1, keepdim=True).sqrt()).float()


def hann_spectrum(nu: Tensor, n: int) -> Tensor:
    """The DFT of a periodic Hann window of length n at fractional bins `nu`: sum_m w[m] e^(-2 pi j nu m / n)."""

    def dirichlet(v: Tensor) -> Tensor:  # sum_m e^(-2 pi j v m / n)
        den = torch.sin(math.pi * v / n)
        whole = den.abs() < 1e-12  # v a multiple of n: every term is 1
        ratio = torch.sin(math.pi * v) / torch.where(whole, torch.ones_like(den), den)
        mag = torch.where(whole, torch.full_like(v, float(n)), ratio)
        return torch.polar(torch.ones_like(v), -math.pi * v * (n - 1) / n) * mag

    return 0.5 * dirichlet(nu) - 0.25 * dirichlet(nu - 1) - 0.25 * dirichlet(nu + 1)


def tone_table(analysis: MelAnalysis, frames: int = 8, reach: int = 16) -> Tensor:
    """(P, n_mels): the normalised log-mel of a steady tone at each quarter semitone, at 0 dBFS RMS.

    Computed in the frequency domain: each harmonic's windowed spectrum is the Hann window's, moved to its
    frequency and turned by its phase at the frame's start, summed over `reach` bins each side (the
    window's leakage beyond is 80 dB down). The log-mel is the mean over `frames` frames a hop apart:
    where bands lie between a low tone's harmonics their leakage depends on where the frame falls. In the
    bands within 60 dB of the loudest it is what analysing `harmonic_tone` gives (tests/model/test_tone.py),
    in a second on one core where synthesising every tone took several."""
    cfg = analysis.cfg
    n, sr = cfg.n_fft, cfg.sample_rate
    midi = torch.arange(LOW_MIDI, HIGH_MIDI + 1e-9, 1.0 / STEPS_PER_SEMITONE, dtype=torch.float64)
    f0 = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
    limit = min(HARMONICS_UP_TO_HZ, sr / 2)
    pitch, harm = [], []
    for p, f in enumerate(f0.tolist()):
        h = torch.arange(1, int(limit / f) + 2, dtype=torch.float64)
        h = h[h * f < limit]
        pitch.append(torch.full_like(h, p, dtype=torch.long))
        harm.append(h)
    pitch_i, h = torch.cat(pitch), torch.cat(harm)
    freq = f0[pitch_i] * h
    amp = (1.0 / h) / torch.sqrt(
        torch.zeros(len(f0), dtype=torch.float64).index_add_(0, pitch_i, 0.5 / h**2)
    )[pitch_i]
    spec = torch.zeros(len(f0) * frames * cfg.n_bins, dtype=torch.complex64)
    starts = torch.arange(frames, dtype=torch.float64) * cfg.hop / sr
    offsets = torch.arange(-reach, reach + 1)
    for sign in (1.0, -1.0):  # e^(+j w t) / 2j and -e^(-j w t) / 2j: a sine's two sides
        near = slice(None) if sign > 0 else freq * n / sr < reach  # the mirror reaches only the lowest
        f, a, p = freq[near], amp[near], pitch_i[near]
        nu = sign * f * n / sr  # where the side sits, in bins
        bins = torch.round(nu).long()[:, None] + offsets  # (M, K)
        keep = (bins >= 0) & (bins < cfg.n_bins)
        kernel = hann_spectrum(bins.double() - nu[:, None], n) * (sign * a / 2j)[:, None]  # (M, K)
        turn = torch.polar(
            torch.ones(len(f), frames, dtype=torch.float64), sign * 2 * math.pi * f[:, None] * starts
        )
        rows, ks = torch.nonzero(keep, as_tuple=True)
        for t in range(frames):
            idx = (p[rows] * frames + t) * cfg.n_bins + bins[rows, ks]
            spec.index_add_(0, idx, (turn[rows, t] * kernel[rows, ks]).to(torch.complex64))
    spec = spec.view(len(f0), frames, cfg.n_bins)
    power = spec.abs() ** 2  # (P, frames, n_bins)
    mel = torch.einsum("mf,ptf->pmt", analysis.fb.float(), power)
    log_mel = (torch.log(mel.clamp(min=cfg.log_floor)) - cfg.shift) / cfg.scale
    return log_mel.mean(dim=-1).float().contiguous()


_MAPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tone_map(codec) -> ToneMap:
    """The codec's tone map, built once (about a second) and kept while the codec lives."""
    tm = _MAPS.get(codec)
    if tm is None:
        tm = _MAPS[codec] = ToneMap(codec)
    return tm
