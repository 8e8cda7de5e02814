"""Streaming phase reconstruction: STFT magnitudes in, audio out, block by block with no seam.

Each block's frames get their phases from fast Griffin-Lim (with momentum) run against the frames
already played, which stay fixed: the new frames are made consistent with the old ones, so the join is
as smooth as the inside of a block. Audio is emitted once every frame that overlaps it is final, which
is `n_fft // 2` samples behind the frames pushed so far; `flush()` gives that tail at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .mel import hann, phase_advance, synthesise, window_sum


@dataclass(frozen=True)
class GriffinLimConfig:
    n_fft: int = 2048
    hop: int = 512
    iters: int = 32
    momentum: float = 0.99  # fast Griffin-Lim (Perraudin et al.); 0 is the classic algorithm


@dataclass
class GriffinLimState:
    """What one stream carries from block to block: the last frames (fixed) and how many were pushed."""

    tail: Tensor | None = None  # (B, overlap, n_bins) complex frames that still overlap unplayed audio
    frames_in: int = 0


class StreamingGriffinLim:
    def __init__(self, cfg: GriffinLimConfig) -> None:
        self.cfg = cfg
        self.overlap = cfg.n_fft // cfg.hop - 1  # earlier frames a new frame overlaps
        self.latency_samples = cfg.n_fft // 2
        self.window = hann(cfg.n_fft)
        self.advance = phase_advance(cfg.n_fft // 2 + 1, cfg.hop, cfg.n_fft)
        self.state = GriffinLimState()
        self._wsum: dict[int, Tensor] = {}

    def reset(self) -> None:
        self.state = GriffinLimState()

    def _synth(self, frames: Tensor) -> Tensor:
        """Complex frames (B, L, n_bins) -> least-squares audio over their span (B, (L-1)*hop + n_fft)."""
        y = synthesise(frames, self.cfg.n_fft, self.cfg.hop)
        n = frames.shape[1]
        if n not in self._wsum:
            self._wsum[n] = window_sum(n, self.cfg.hop, self.window).clamp(min=1e-3)
        return y / self._wsum[n]

    def _analyse(self, audio: Tensor, first: int, count: int) -> Tensor:
        """Frames first..first+count-1 of `audio` laid out on the frame grid (B, count, n_bins)."""
        span = audio[:, first * self.cfg.hop : (first + count - 1) * self.cfg.hop + self.cfg.n_fft]
        return torch.fft.rfft(span.unfold(-1, self.cfg.n_fft, self.cfg.hop) * self.window, dim=-1)

    @torch.no_grad()
    def push(self, mag: Tensor) -> Tensor:
        """(B, n_bins, F) magnitudes -> (B, F * hop) samples (less the latency on the first push)."""
        mag = mag.float().transpose(1, 2)  # (B, F, n_bins)
        st, cfg = self.state, self.cfg
        b, n, _ = mag.shape
        if n == 0:
            return mag.new_zeros(b, 0)
        tail = st.tail if st.tail is not None else mag.new_zeros(b, 0, mag.shape[-1], dtype=torch.complex64)
        if tail.shape[0] != b:
            raise ValueError("batch size changed mid-stream; call reset()")
        k = tail.shape[1]
        steps = torch.arange(1, n + 1, dtype=torch.float32)[:, None] * self.advance
        start = torch.angle(tail[:, -1]) if k else torch.zeros_like(mag[:, 0])
        # a stationary sinusoid's phase: a start that Griffin-Lim corrects
        frames = torch.cat([tail, torch.polar(mag, start[:, None, :] + steps)], dim=1)
        new = frames[:, k:]  # a view: updating it updates the frames synthesised
        prev = None
        for _ in range(cfg.iters):
            c = self._analyse(self._synth(frames), k, n)
            target = c if prev is None else c + cfg.momentum * (c - prev)
            prev = c
            new.copy_(mag * torch.sgn(target))  # keep the magnitudes, take the phases
        audio = self._synth(frames)
        out = self._emit(audio, k, n)
        st.tail = frames[:, -self.overlap :] if frames.shape[1] >= self.overlap else frames
        st.frames_in += n
        return out

    def _emit(self, audio: Tensor, k: int, n: int) -> Tensor:
        """The samples no later frame touches, from where the last push stopped.

        Region index i is stream sample (frames_in - k)·hop - n_fft/2 + i; stream frame t spans
        [t·hop - n_fft/2, t·hop + n_fft/2), so a sample is final below (frames_in + n)·hop - n_fft/2."""
        hop = self.cfg.hop
        start = self.cfg.n_fft // 2 if self.state.frames_in == 0 else k * hop
        return audio[:, start : (k + n) * hop]

    @torch.no_grad()
    def flush(self) -> Tensor:
        """The last `latency_samples` (the stream as if it ended in silence), then reset."""
        st = self.state
        if st.tail is None:
            self.reset()
            return torch.zeros(1, 0)
        k = st.tail.shape[1]
        audio = self._synth(st.tail)
        out = audio[:, k * self.cfg.hop : k * self.cfg.hop + self.latency_samples]
        self.reset()
        return out
