"""The block-wise self-attention KV cache: an explicit, preallocated value the stream owns and passes in."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .dit import Rope, apply_rope


@dataclass
class KVCache:
    """Per-layer keys (post q/k-norm, post-RoPE) and values of clean context frames.

    k, v: (depth, batch, heads, capacity, head_dim). Only the first `length` frames are valid. The buffers
    are allocated once; sliding and writing copy into them, so memory never grows with the stream.
    """

    k: Tensor
    v: Tensor
    length: int = 0

    @classmethod
    def allocate(
        cls, depth: int, batch: int, heads: int, capacity: int, head_dim: int, device=None, dtype=None
    ) -> KVCache:
        shape = (depth, batch, heads, capacity, head_dim)
        return cls(
            torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        )

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def prefix(self, start: int = 0) -> list[tuple[Tensor, Tensor]]:
        """Per-layer (k, v) views of frames [start, length)."""
        return [
            (self.k[i, :, :, start : self.length], self.v[i, :, :, start : self.length])
            for i in range(len(self.k))
        ]

    def write(self, kvs: list[tuple[Tensor, Tensor]], start: int = 0) -> None:
        """Copy per-layer (k, v) of n frames into [start, start+n) and extend `length` to cover them."""
        n = kvs[0][0].shape[2]
        if start + n > self.capacity:
            raise ValueError(f"cache overflow: {start}+{n} > capacity {self.capacity}")
        for i, (k, v) in enumerate(kvs):
            self.k[i, :, :, start : start + n].copy_(k)
            self.v[i, :, :, start : start + n].copy_(v)
        self.length = max(self.length, start + n)

    def rotate(self, rope: Rope) -> None:
        """Re-rotate the valid keys in place (RoPE by a fixed offset).

        Sliding the window by n frames re-rotates cached keys by -n, so positions stay inside the fixed window
        however long the stream runs (float32 angles stay exact) while relative positions are unchanged.
        """
        k = self.k[:, :, :, : self.length]
        k.copy_(apply_rope(k, rope))

    def slide(self, n: int) -> None:
        """Drop the oldest n frames and shift the rest to the front."""
        keep = self.length - n
        if keep > 0:
            self.k[:, :, :, :keep].copy_(self.k[:, :, :, n : self.length].clone())
            self.v[:, :, :, :keep].copy_(self.v[:, :, :, n : self.length].clone())
        self.length = max(keep, 0)

    def reset(self) -> None:
        self.length = 0
