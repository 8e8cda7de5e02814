"""Streaming decode of the Oobleck VAE: the decoder compiled into cached convolutions, chunk by chunk.

Each layer keeps its left context in a fixed buffer, so decoding a stream chunk by chunk gives the samples
decoding it whole would (see the VAE's module docstring for the causal and the symmetric case).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .oobleck import (
    DecoderBlock,
    OobleckDecoder,
    ResidualUnit,
    SnakeBeta,
    WNConv1d,
    WNConvTranspose1d,
    snake_inplace,
)

__all__ = ["DecoderState", "StreamingDecoder"]


@dataclass
class DecoderState:
    """Everything a streaming decode carries between pushes. Its size is fixed at allocation.

    ``buffers[i]``: left context of a conv, overlap-add tail of a transposed conv, or the delay line
    of a residual skip path. ``skip[i]``: outputs of op i still to drop so a delayed (non-causal) layer
    lines up with the full decode.
    """

    buffers: list[Tensor] = field(default_factory=list)
    skip: list[int] = field(default_factory=list)
    frames_in: int = 0
    samples_out: int = 0

    def clone(self) -> DecoderState:
        buffers = [b.clone() for b in self.buffers]
        return DecoderState(buffers, list(self.skip), self.frames_in, self.samples_out)

    def numel(self) -> int:
        return sum(b.numel() for b in self.buffers)


class _Op:
    """One step of the compiled streaming graph. ``delay`` is at this op's output rate."""

    delay = 0
    stride = 1

    def alloc(self, st: DecoderState, batch: int, like: Tensor) -> None:
        pass

    def push(self, x: Tensor, st: DecoderState) -> Tensor:
        raise NotImplementedError

    def flush(self, x: Tensor, st: DecoderState) -> Tensor:
        """Push the upstream's last samples, then emit what this op still owes (its right padding)."""
        return self.push(x, st)


def _new_slot(st: DecoderState, buf: Tensor, skip: int) -> int:
    st.buffers.append(buf)
    st.skip.append(skip)
    return len(st.buffers) - 1


def _drop(y: Tensor, st: DecoderState, slot: int) -> Tensor:
    n = min(st.skip[slot], y.shape[-1])
    if n:
        st.skip[slot] -= n
        y = y[..., n:]
    return y


class _Act(_Op):
    def __init__(self, module: nn.Module):
        self.module = module

    def push(self, x: Tensor, st: DecoderState) -> Tensor:
        return self.module(x)


class _Snake(_Op):
    """SnakeBeta with its coefficients cached until alpha or beta change."""

    def __init__(self, module: SnakeBeta):
        self.module, self._key = module, ()

    def push(self, x: Tensor, st: DecoderState) -> Tensor:
        a, b = self.module.alpha, self.module.beta
        key = (id(a), a._version, id(b), b._version)
        if key != self._key:
            self._coef, self._key = tuple(c.detach() for c in self.module.coefficients()), key
        return snake_inplace(x, *self._coef)


class _Seq(_Op):
    def __init__(self, ops: list[_Op]):
        self.ops = ops
        self.stride = math.prod(op.stride for op in ops)
        delay = 0
        for op in ops:
            delay = delay * op.stride + op.delay
        self.delay = delay

    def alloc(self, st: DecoderState, batch: int, like: Tensor) -> None:
        for op in self.ops:
            op.alloc(st, batch, like)

    def push(self, x: Tensor, st: DecoderState) -> Tensor:
        for op in self.ops:
            x = op.push(x, st)
        return x

    def flush(self, x: Tensor, st: DecoderState) -> Tensor:
        for op in self.ops:
            x = op.flush(x, st)
        return x


# Below this many input elements per batch item torch runs a 1-d conv without oneDNN, and its fallback
# for dilated and transposed convs is several times slower than one matmul; streaming chunks are small.
# A k=1 conv is a plain matmul at any size.
_SMALL_INPUT = 20480


class _Conv(_Op):
    """Cached conv: keeps the last (k-1)·d inputs; right padding becomes a delay of ``padding[1]``."""

    def __init__(self, conv: WNConv1d):
        if conv.stride != 1 or sum(conv.padding) != (conv.kernel_size - 1) * conv.dilation:
            raise ValueError("streaming conv needs stride 1 and 'same' total padding")
        self.conv, self.delay, self.context = conv, conv.padding[1], (conv.kernel_size - 1) * conv.dilation
        self._key: tuple[int, ...] = ()

    def _weights(self) -> tuple[Tensor, Tensor]:
        """The conv weight, and the same as one (out, k·in) matrix; rebuilt only when the weight changes."""
        key = self.conv.weight_key()
        if key != self._key:
            w = self.conv.get_weight().detach()
            self._w, self._w2d, self._key = w, w.permute(0, 2, 1).reshape(w.shape[0], -1).contiguous(), key
        return self._w, self._w2d

    def alloc(self, st: DecoderState, batch: int, like: Tensor) -> None:
        self.slot = _new_slot(st, like.new_zeros(batch, self.conv.in_channels, self.context), self.delay)

    def push(self, x: Tensor, st: DecoderState) -> Tensor:
        m = x.shape[-1]
        if m == 0:
            return x.new_zeros(x.shape[0], self.conv.out_channels, 0)
        if self.context:
            buf = st.buffers[self.slot]
            x = torch.cat((buf, x), dim=-1)
            buf.copy_(x[..., -self.context :])
        w, w2d = self._weights()
        k = w.shape[-1]
        if k > 1 and x[0].numel() > _SMALL_INPUT:
            y = F.conv1d(x, w, self.conv.bias, 1, 0, self.conv.dilation)
        else:  # im2col by hand: k shifted views stacked along channels, then one matmul
            d = self.conv.dilation
            cols = x if k == 1 else torch.cat([x[..., j * d : j * d + m] for j in range(k)], 1)
            y = torch.mm(w2d, cols[0]).unsqueeze(0) if cols.shape[0] == 1 else torch.matmul(w2d, cols)
            if self.conv.bias is not None:
                y += self.conv.bias[:, None]
        return _drop(y, st, self.slot)

    def flush(self, x: Tensor, st: DecoderState) -> Tensor:
        pad = x.new_zeros(x.shape[0], x.shape[1], self.delay)
        return self.push(torch.cat((x, pad), dim=-1), st)


class _ConvT(_Op):
    """Transposed conv (k = 2s) by overlap-add: one matmul gives every input frame's 2s output samples;
    the first half lands on the frame itself, the second half on the next frame, so the last frame's
    second half waits in a tail buffer. Left crop becomes a delay; flush emits the tail minus the
    right crop."""

    def __init__(self, conv: WNConvTranspose1d):
        if conv.kernel_size != 2 * conv.stride:
            raise ValueError("streaming transposed conv needs kernel_size == 2 * stride")
        self.conv, self.stride, self.delay = conv, conv.stride, conv.crop[0]
        self._key: tuple[int, ...] = ()

    def _weights(self) -> Tensor:
        key = self.conv.weight_key()
        if key != self._key:  # (in, out, 2s) -> (out·2s, in)
            w = self.conv.get_weight().detach()
            self._wt, self._key = w.reshape(w.shape[0], -1).t().contiguous(), key
        return self._wt

    def alloc(self, st: DecoderState, batch: int, like: Tensor) -> None:
        self.slot = _new_slot(st, like.new_zeros(batch, self.conv.out_channels, self.stride), self.delay)

    def _bias(self, y: Tensor) -> Tensor:
        return y if self.conv.bias is None else y + self.conv.bias[:, None]

    def push(self, x: Tensor, st: DecoderState) -> Tensor:
        b, m, s = x.shape[0], x.shape[-1], self.stride
        if m == 0:
            return x.new_zeros(b, self.conv.out_channels, 0)
        wt = self._weights()
        y = torch.mm(wt, x[0]) if b == 1 else torch.matmul(wt, x)
        y = y.view(b, self.conv.out_channels, 2, s, m)
        head, over = y[:, :, 0], y[:, :, 1]  # (b, out, s, m): sample t of frame i, and of frame i + 1
        out = head.transpose(-1, -2).contiguous()  # (b, out, m, s)
        out[:, :, 1:] += over[..., :-1].transpose(-1, -2)
        tail = st.buffers[self.slot]
        out[:, :, 0] += tail
        tail.copy_(over[..., -1])
        if self.conv.bias is not None:
            out += self.conv.bias[:, None, None]
        return _drop(out.view(b, -1, m * s), st, self.slot)

    def flush(self, x: Tensor, st: DecoderState) -> Tensor:
        y = self.push(x, st)
        rest = self._bias(st.buffers[self.slot][..., : self.stride - self.conv.crop[1]])
        return torch.cat((y, _drop(rest, st, self.slot)), dim=-1)


class _Residual(_Op):
    """Branch plus a skip path delayed by the branch's delay (a fixed-size delay line)."""

    def __init__(self, unit: ResidualUnit):
        self.branch = _compile(unit.layers)
        self.channels, self.delay = unit.channels, self.branch.delay

    def alloc(self, st: DecoderState, batch: int, like: Tensor) -> None:
        self.branch.alloc(st, batch, like)
        self.slot = _new_slot(st, like.new_zeros(batch, self.channels, self.delay), self.delay)

    def _skip_path(self, x: Tensor, st: DecoderState) -> Tensor:
        if not self.delay:
            return x
        line = st.buffers[self.slot]
        x = torch.cat((line, x), dim=-1)
        line.copy_(x[..., -self.delay :])
        return _drop(x[..., : -self.delay], st, self.slot)

    def push(self, x: Tensor, st: DecoderState) -> Tensor:
        return self._skip_path(x, st) + self.branch.push(x, st)

    def flush(self, x: Tensor, st: DecoderState) -> Tensor:
        pad = x.new_zeros(x.shape[0], x.shape[1], self.delay)
        return self._skip_path(torch.cat((x, pad), dim=-1), st) + self.branch.flush(x, st)


def _compile(module: nn.Module) -> _Op:
    if isinstance(module, WNConv1d):
        return _Conv(module)
    if isinstance(module, WNConvTranspose1d):
        return _ConvT(module)
    if isinstance(module, ResidualUnit):
        return _Residual(module)
    if isinstance(module, nn.Sequential):
        return _Seq([_compile(m) for m in module])
    if isinstance(module, (OobleckDecoder, DecoderBlock)):
        return _compile(module.layers)
    if isinstance(module, SnakeBeta):
        return _Snake(module)
    if isinstance(module, (nn.ELU, nn.Tanh, nn.Identity)):
        return _Act(module)
    raise TypeError(f"cannot stream {type(module).__name__}")


class StreamingDecoder:
    """Decode latents block by block with exactly the output of a whole-sequence decode.

    ``push`` returns audio up to ``latency_samples`` behind the latents pushed so far (0 for a causal
    decoder); ``flush`` returns the rest and resets. Per push the work is that of the new samples plus
    copying a fixed amount of cached context per conv; nothing grows with stream length.
    Weights are re-read whenever the decoder's parameters change, so loading new weights needs no reset.
    """

    def __init__(self, decoder: OobleckDecoder):
        self.decoder = decoder
        self.hop = decoder.cfg.hop
        self._graph = _compile(decoder)
        assert self._graph.stride == self.hop
        self.latency_samples: int = self._graph.delay
        self.lookahead_frames: int = -(-self.latency_samples // self.hop)
        self.state: DecoderState | None = None

    def reset(self, batch_size: int | None = None) -> DecoderState | None:
        """Start a new stream; with ``batch_size`` the state is allocated now, not at the first push."""
        self.state = None
        if batch_size is not None:
            self.state = self._alloc(batch_size)
        return self.state

    def _alloc(self, batch: int) -> DecoderState:
        like = next(self.decoder.parameters())
        st = DecoderState()
        with torch.no_grad():
            self._graph.alloc(st, batch, like)
        return st

    @torch.no_grad()
    def push(self, latents: Tensor) -> Tensor:
        """(B, latent_dim, n) → (B, out_channels, m) with m = n·hop once the lookahead is filled."""
        if self.state is None:
            self.state = self._alloc(latents.shape[0])
        if latents.shape[0] != self.state.buffers[0].shape[0]:
            raise ValueError("batch size changed mid-stream; call reset()")
        y = self._graph.push(latents.to(self.state.buffers[0].dtype), self.state)
        self.state.frames_in += latents.shape[-1]
        self.state.samples_out += y.shape[-1]
        return y

    @torch.no_grad()
    def flush(self) -> Tensor:
        """Return the last ``latency_samples`` of the stream (as if it ended with zero padding) and reset."""
        st = self.state
        if st is None:
            like = next(self.decoder.parameters())
            return like.new_zeros(0, self.decoder.cfg.out_channels, 0)
        lat = st.buffers[0]
        y = self._graph.flush(lat.new_zeros(lat.shape[0], self.decoder.cfg.latent_dim, 0), st)
        self.state = None
        return y
