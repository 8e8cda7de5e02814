"""Neural inverses of the log-mel tokens: a Vocos-style vocoder, and a learned autoencoder beside it.

Vocos' idea: a ConvNeXt backbone at the frame rate (no upsampling stack) predicts each frame's STFT
magnitude and phase, and an inverse STFT makes the audio. Harmonics land in the right bins by
construction, which is what keeps pitch. Here the convolutions look back only, except the first, which
sees `lookahead` frames ahead: a block's last frames wait that long for the next block.

`MelVocoder` turns log-mel frames into audio. `MelAutoencoder` squeezes the same log-mel into `latent_dim`
values per token (a learned bottleneck, 21.5 tokens/s) and decodes with the same backbone and head.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mel import hann, synthesise, window_sum


@dataclass(frozen=True)
class VocoderConfig:
    n_mels: int = 128
    n_fft: int = 2048
    hop: int = 512
    dim: int = 256
    depth: int = 8
    kernel: int = 7
    lookahead: int = 2  # frames the input convolution sees ahead
    latent_dim: int = 0  # > 0: an autoencoder with this many values per token
    group: int = 4  # frames per token (the autoencoder's downsampling)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VocoderConfig:
        return cls(**d)

    @property
    def context_frames(self) -> int:
        """Frames of left context an output frame depends on."""
        return (self.kernel - 1 - self.lookahead) + self.depth * (self.kernel - 1)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.dw = nn.Conv1d(dim, dim, kernel, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 3 * dim)
        self.down = nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.dw(F.pad(x, (self.kernel - 1, 0))).transpose(1, 2)
        h = self.down(F.gelu(self.up(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class Backbone(nn.Module):
    """(B, c_in, T) -> (B, n_bins, T) complex STFT frames."""

    def __init__(self, cfg: VocoderConfig, c_in: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(c_in, cfg.dim, cfg.kernel)
        self.norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.kernel) for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, 2 * (cfg.n_fft // 2 + 1))

    def forward(self, x: Tensor) -> Tensor:
        k, la = self.cfg.kernel, self.cfg.lookahead
        h = self.embed(F.pad(x, (k - 1 - la, la)))
        h = self.norm(h.transpose(1, 2)).transpose(1, 2)
        for blk in self.blocks:
            h = blk(h)
        mag, phase = self.head(self.out_norm(h.transpose(1, 2))).chunk(2, dim=-1)
        return torch.polar(torch.exp(mag.clamp(max=8.0)), phase).transpose(1, 2)


def istft(frames: Tensor, n_fft: int, hop: int) -> Tensor:
    """(B, n_bins, T) complex frames centred on t*hop -> (B, T*hop) audio (the analysis' exact inverse)."""
    y = synthesise(frames.transpose(1, 2), n_fft, hop)
    y = y / window_sum(frames.shape[-1], hop, hann(n_fft).to(y)).clamp(min=1e-3)
    lead = n_fft // 2
    return y[:, lead : lead + frames.shape[-1] * hop]


class MelVocoder(nn.Module):
    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg, cfg.n_mels)

    def frames(self, log_mel: Tensor) -> Tensor:
        return self.backbone(log_mel)

    def forward(self, log_mel: Tensor) -> Tensor:
        """(B, n_mels, T) normalised log-mel -> (B, T * hop) audio."""
        return istft(self.frames(log_mel), self.cfg.n_fft, self.cfg.hop)


class MelAutoencoder(nn.Module):
    """Log-mel -> `latent_dim` per token -> STFT frames; the bottleneck is learned, the rest as the vocoder."""

    def __init__(self, cfg: VocoderConfig) -> None:
        super().__init__()
        if cfg.latent_dim <= 0:
            raise ValueError("an autoencoder needs latent_dim > 0")
        self.cfg = cfg
        g = cfg.group
        self.enc_in = nn.Conv1d(cfg.n_mels, cfg.dim, cfg.kernel, padding=cfg.kernel // 2)
        self.enc_blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.kernel) for _ in range(2))
        self.enc_out = nn.Conv1d(cfg.dim, cfg.latent_dim, g, stride=g)
        self.dec_in = nn.ConvTranspose1d(cfg.latent_dim, cfg.n_mels, g, stride=g)
        self.backbone = Backbone(cfg, cfg.n_mels)

    def encode(self, log_mel: Tensor) -> Tensor:
        """(B, n_mels, T) -> (B, latent_dim, T // group)."""
        h = self.enc_in(log_mel)
        for blk in self.enc_blocks:
            h = blk(h)
        return self.enc_out(h)

    def frames(self, latents: Tensor) -> Tensor:
        return self.backbone(self.dec_in(latents))

    def forward(self, latents: Tensor) -> Tensor:
        return istft(self.frames(latents), self.cfg.n_fft, self.cfg.hop)


class StreamingVocoder:
    """Push input frames (log-mel, or latents for the autoencoder), get audio; equal to a whole decode.

    The backbone is re-run over `context_frames` of remembered input plus the new frames, and only the
    frames whose lookahead has arrived are synthesised; the inverse STFT's overlap is carried as a tail.
    """

    def __init__(self, net: MelVocoder | MelAutoencoder) -> None:
        self.net = net
        cfg = net.cfg
        self.step = cfg.group if isinstance(net, MelAutoencoder) else 1  # output frames per input frame
        ctx_out = cfg.context_frames + cfg.lookahead
        self.ctx_in = -(-ctx_out // self.step) + 1  # input frames kept as context
        self.latency_samples = cfg.lookahead * cfg.hop + cfg.n_fft // 2
        self.reset()

    def reset(self) -> None:
        self.inputs: Tensor | None = None  # remembered input frames
        self.frames_out = 0  # STFT frames synthesised so far
        self.tail: Tensor | None = None  # overlap-added samples not yet complete
        self.frames_in = 0

    @torch.no_grad()
    def push(self, x: Tensor) -> Tensor:
        """(B, C, n) input frames -> (B, samples) audio, `latency_samples` behind on the first push."""
        x = x.to(next(self.net.parameters()).dtype)
        buf = x if self.inputs is None else torch.cat([self.inputs, x], dim=-1)
        first_out = (self.frames_in - (buf.shape[-1] - x.shape[-1])) * self.step  # frame of frames[..., 0]
        self.frames_in += x.shape[-1]
        # a buffer that starts mid-stream gets its first outputs wrong (no left context): those are never
        # taken, since it holds more context than the receptive field
        frames = self.net.frames(buf)
        # frames whose lookahead has arrived (none yet while the stream is shorter than the lookahead)
        ready = max(self.frames_in * self.step - self.net.cfg.lookahead, self.frames_out)
        new = frames[..., self.frames_out - first_out : ready - first_out]
        self.inputs = buf[..., -self.ctx_in :]
        return self._synth(new)

    def _synth(self, frames: Tensor) -> Tensor:
        """Overlap-add frames frames_out.. onto the carried tail; return the samples now complete.

        Frame f spans stream samples [f·hop - n_fft/2, f·hop + n_fft/2), so after frame F-1 the
        samples below F·hop - n_fft/2 are final; the rest is carried."""
        cfg = self.net.cfg
        n = frames.shape[-1]
        if n == 0:
            return frames.real.new_zeros(frames.shape[0], 0)
        y = synthesise(frames.transpose(1, 2), cfg.n_fft, cfg.hop)
        wsum = window_sum(n, cfg.hop, hann(cfg.n_fft).to(y))
        if self.tail is not None:
            y[:, : self.tail.shape[-1]] += self.tail
            wsum[: self.tail_w.shape[-1]] += self.tail_w
        start = cfg.n_fft // 2 if self.frames_out == 0 else 0  # the stream starts at frame 0's centre
        out = y[:, start : n * cfg.hop] / wsum[start : n * cfg.hop].clamp(min=1e-3)
        self.tail, self.tail_w = y[:, n * cfg.hop :], wsum[n * cfg.hop :]
        self.frames_out += n
        return out

    @torch.no_grad()
    def flush(self) -> Tensor:
        """The frames still waiting for lookahead, decoded as the whole decode ends (zero padding), and
        the last `n_fft // 2` samples; then reset."""
        if self.inputs is None:
            return torch.zeros(1, 0)
        first_out = (self.frames_in - self.inputs.shape[-1]) * self.step
        frames = self.net.frames(self.inputs)
        out = self._synth(frames[..., self.frames_out - first_out :])
        lead = self.net.cfg.n_fft // 2
        tail = self.tail[:, :lead] / self.tail_w[:lead].clamp(min=1e-3)
        self.reset()
        return torch.cat([out, tail], dim=-1)
