"""The block-wise self-attention KV cache: an explicit, preallocated value the stream owns and passes in."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .dit import KVSlot, Rope, apply_rope


@dataclass
class KVCache:
    """Per-layer keys (post q/k-norm, post-RoPE) and values of clean context frames.

    k, v: (depth, batch, heads, capacity + room, head_dim). Only the first `length` frames are valid; the
    `room` after the capacity is where a denoising step's queries put their own keys/values, so attention
    reads one contiguous view instead of concatenating. The buffers are allocated once; sliding and writing
    copy into them, so memory never grows with the stream.
    """

    k: Tensor
    v: Tensor
    length: int = 0
    room: int = 0

    @classmethod
    def allocate(
        cls,
        depth: int,
        batch: int,
        heads: int,
        capacity: int,
        head_dim: int,
        device=None,
        dtype=None,
        room: int = 0,
    ) -> KVCache:
        z = torch.zeros((depth, batch, heads, capacity + room, head_dim), device=device, dtype=dtype)
        return cls(z, torch.zeros_like(z), room=room)

    def clone(self) -> KVCache:
        """An independent copy (a stream snapshot to regenerate from)."""
        return KVCache(self.k.clone(), self.v.clone(), self.length, self.room)

    @property
    def capacity(self) -> int:
        return self.k.shape[3] - self.room

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def slots(self, start: int = 0) -> list[KVSlot]:
        """Per-layer views for attention: the valid frames from `start`, then the room the queries write into."""
        return [KVSlot(self.k[i], self.v[i], self.length, start) for i in range(len(self.k))]

    def extend(self, n: int) -> None:
        """Keep the first n frames the last step's queries wrote after the valid ones."""
        if self.length + n > self.k.shape[3]:
            raise ValueError(f"cache overflow: {self.length}+{n} > {self.k.shape[3]} frames")
        self.length += n

    def write(self, kvs: list[tuple[Tensor, Tensor]], start: int = 0) -> None:
        """Copy per-layer (k, v) of n frames into [start, start+n) and extend `length` to cover them."""
        n = kvs[0][0].shape[2]
        if start + n > self.capacity:
            raise ValueError(f"cache overflow: {start}+{n} > capacity {self.capacity}")
        for i, (k, v) in enumerate(kvs):
            self.k[i, :, :, start : start + n].copy_(k.detach())
            self.v[i, :, :, start : start + n].copy_(v.detach())
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

    def drop_newest(self, n: int) -> None:
        """Forget the newest n frames (they are about to be recomputed from fresher inputs)."""
        self.length = max(self.length - n, 0)

    def reset(self) -> None:
        self.length = 0
