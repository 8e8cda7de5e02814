"""The window an LMDM block is made in: its shape and mode, its conditioning, the state a stream carries
from block to block, and the attention masks of the modes (lmdm.py describes them).

Data only, no model: the trainers, the stream and the benchmarks build and read these without a DiT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from .cache import KVCache
from .dit import CrossKV

Mode = Literal["bidirectional", "encdec", "causal"]
MODES: tuple[Mode, ...] = ("bidirectional", "encdec", "causal")


@dataclass(frozen=True)
class LMDMConfig:
    mode: Mode = "encdec"
    context_frames: int = 192
    block_frames: int = 48
    # Block-Causal: context chunks the target attends to at denoising steps >= 1. None = w-1, the training
    # mask (ours); w = the authors' streaming cache, so a model post-trained there streams here as there.
    step_chunks: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.context_frames < 1 or self.block_frames < 1:
            raise ValueError("context_frames and block_frames must be >= 1")
        if self.mode == "causal" and (self.context_frames % self.block_frames or self.window_chunks < 2):
            raise ValueError(
                f"causal mode needs context_frames ({self.context_frames}) = w * block_frames "
                f"({self.block_frames}) with w >= 2"
            )
        if self.step_chunks is not None and self.mode == "causal":
            w = self.window_chunks
            if self.step_chunks not in (w - 1, w):
                raise ValueError(
                    f"step_chunks must be {w - 1} or {w} for this window, got {self.step_chunks}"
                )

    @property
    def window_chunks(self) -> int:
        return self.context_frames // self.block_frames

    @property
    def target_chunks(self) -> int:
        """Context chunks a Block-Causal target sees at steps >= 1."""
        return self.window_chunks - 1 if self.step_chunks is None else self.step_chunks


@dataclass
class Conditioning:
    """Per-block conditioning, one row per sampler branch: conditional[, unconditional][, conditional
    without tempo]. `extras_keep` (rows, E) multiplies each row's extra input channels, context and target
    alike: the tempo-guidance row sees its tempo channels zeroed, as a window trained without a clock."""

    cross: CrossKV
    global_cond: Tensor | None
    extras_keep: Tensor | None = None

    @property
    def rows(self) -> int:
        return self.cross[0][0].shape[0]


@dataclass
class BlockState:
    """Everything that carries from one block to the next. Passed in and mutated by `LMDM.generate`."""

    frames: Tensor  # (1, 1 + io + E, C): the context window as input_add channels [mask; clean; extras]
    io: int
    cache: KVCache | None = None
    pending: Tensor | None = None  # causal: the last block's frames, not yet in the cache
    cached_frames: Tensor | None = None  # causal: the frames the cached chunks were computed from
    history: list[Tensor] = field(default_factory=list)  # causal reference: all frames since bootstrap
    blocks: int = 0

    @property
    def context(self) -> Tensor:
        """(1, io, C) clean latents of the context (zeros where the mask is 0)."""
        return self.frames[:, 1 : 1 + self.io]

    @property
    def mask(self) -> Tensor:
        return self.frames[:, :1]

    def copy(self) -> BlockState:
        """An independent copy: the stream saves one at each block boundary it may regenerate from."""
        return BlockState(
            frames=self.frames.clone(),
            io=self.io,
            cache=None if self.cache is None else self.cache.clone(),
            pending=None if self.pending is None else self.pending.clone(),
            cached_frames=None if self.cached_frames is None else self.cached_frames.clone(),
            history=list(self.history),
            blocks=self.blocks,
        )

    def rebootstrap(self) -> None:
        """Forget cached context (it is recomputed from `frames` at the next block)."""
        if self.cache is not None:
            self.cache.reset()
        self.pending = None
        self.cached_frames = None
        self.history = []

    def eject(self, n: int) -> None:
        """Drop the oldest n context frames (mask 0, zeros) and rebuild the cache from what is left, so a
        new prompt is not held back by old music (a re-bootstrap even when n is 0)."""
        n = min(max(n, 0), self.frames.shape[-1])
        if n:
            self.frames = self.frames.clone()
            self.frames[:, :, :n] = 0
        self.rebootstrap()

    def refresh(self, lo: int, hi: int, values: Tensor) -> None:
        """Overwrite input channels [lo, hi) of the context (and of the pending block) with `values`
        (B, hi-lo, C): a jam's accompaniment as visible now. Cached chunks this changes are recomputed."""
        frames = self.frames.clone()
        frames[:, lo:hi] = values.to(frames)
        self.frames = frames
        if self.pending is not None:
            pending = self.pending.clone()
            pending[:, lo:hi] = values[..., -pending.shape[-1] :].to(pending)
            self.pending = pending


def chunk_mask(q_chunks: Tensor, k_chunks: Tensor, w: int) -> Tensor:
    """Block-Causal attention: a chunk sees itself and the w-1 chunks before it. True = attend."""
    d = q_chunks[:, None] - k_chunks[None, :]
    return (d >= 0) & (d < w)


def encdec_mask(c: int, n: int) -> Tensor:
    """Enc-Dec over n tokens whose first c are context: context sees only context, the rest see all."""
    q = torch.arange(n)[:, None]
    k = torch.arange(n)[None, :]
    return (k < c) | (q >= c)
