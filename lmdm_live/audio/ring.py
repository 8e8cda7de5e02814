"""`AudioRing`: the lock-free single-producer/single-consumer frame ring between inference and audio callback.

The inference thread writes, the audio callback reads. Neither ever waits for the other: the producer
writes what fits, the consumer reads what is there and plays silence for the rest (an underrun, counted).
Each side owns one monotonic index and publishes it only after its data copy, so the other side never sees
frames that are not yet (or no longer) in `data`. Under the GIL a Python int assignment is atomic, which is
all the synchronisation this needs.
"""

from __future__ import annotations

import numpy as np


class AudioRing:
    """A preallocated float32 ring of `capacity` frames of `channels` samples each.

    Producer side: `write`, `free`. Consumer side: `read_into`. Both: `fill`, `frames_read`,
    `frames_written`, the underrun statistics. `frames_written - frames_read == fill` always holds.
    """

    def __init__(self, channels: int, capacity: int) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 frame, got {capacity}")
        self.channels = int(channels)
        self.capacity = int(capacity)
        self.data = np.zeros((self.capacity, self.channels), dtype=np.float32)
        self._w = 0  # frames ever written; only the producer assigns it
        self._r = 0  # frames ever consumed (read or cleared); only the consumer side assigns it
        # Consumer-owned statistics. reset_stats() never writes them: it moves baselines (read side) or
        # bumps a generation number the consumer acknowledges, so a reset cannot race an increment.
        self._underruns = 0
        self._underrun_frames = 0
        self._read_errors = 0
        self._fill_min = self.capacity
        self._stats_gen = 0
        self._seen_gen = 0
        self._underruns_base = 0
        self._underrun_frames_base = 0

    # --- shared views --------------------------------------------------------------------------

    @property
    def fill(self) -> int:
        """Frames written and not yet read."""
        return self._w - self._r

    @property
    def free(self) -> int:
        """Frames the producer can write now without dropping any."""
        return self.capacity - (self._w - self._r)

    @property
    def frames_written(self) -> int:
        """Total frames the producer has put in the ring (monotonic)."""
        return self._w

    @property
    def frames_read(self) -> int:
        """Total frames the consumer has taken (monotonic; includes frames dropped by `clear`).

        Stream position of the next frame the consumer will play. Silence played on underruns is not
        included: the device clock is `frames_read + underrun_frames` (since the last `reset_stats`)."""
        return self._r

    @property
    def underruns(self) -> int:
        """Consumer reads that came up short since `reset_stats` (each played some silence)."""
        return self._underruns - self._underruns_base

    @property
    def underrun_frames(self) -> int:
        """Frames of silence played for want of data since `reset_stats`."""
        return self._underrun_frames - self._underrun_frames_base

    @property
    def read_errors(self) -> int:
        """Reads that failed (e.g. a wrongly shaped `out`) and played silence instead of raising."""
        return self._read_errors

    @property
    def fill_min(self) -> int:
        """Lowest fill left after a consumer read since `reset_stats` (the worst headroom seen).

        `capacity` until the consumer has read once since the reset."""
        if self._seen_gen != self._stats_gen:
            return self.capacity
        return self._fill_min

    def reset_stats(self) -> None:
        """Start counting underruns and the minimum fill afresh (safe from any thread)."""
        self._underruns_base = self._underruns
        self._underrun_frames_base = self._underrun_frames
        self._stats_gen += 1

    # --- producer ------------------------------------------------------------------------------

    def write(self, block: np.ndarray) -> int:
        """Copy as many frames of `block` (frames, channels) as fit; return how many were written."""
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"expected a (frames, {self.channels}) block, got shape {block.shape}")
        w = self._w
        n = min(block.shape[0], self.capacity - (w - self._r))
        if n <= 0:
            return 0
        pos = w % self.capacity
        first = min(n, self.capacity - pos)
        np.copyto(self.data[pos : pos + first], block[:first], casting="same_kind")
        if n > first:
            np.copyto(self.data[: n - first], block[first:n], casting="same_kind")
        self._w = w + n  # publish only after the data is in place
        return n

    def retract(self, position: int, guard: int) -> bool:
        """Take back every frame written from `position` (a `frames_written` value) on, to write others in
        their place; refused (False) unless `position` is at least `guard` frames past what the consumer
        has read. Producer side. A consumer read in progress copies at most one callback's frames from its
        read index, so with `guard` above a callback's size it never meets the frames being replaced."""
        if position > self._w:
            raise ValueError(f"cannot retract to {position}: only {self._w} frames were written")
        if position < self._r + guard:
            return False
        self._w = position
        return True

    # --- consumer ------------------------------------------------------------------------------

    def read_into(self, out: np.ndarray) -> int:
        """Fill `out` (frames, channels) from the ring, silence for what is missing; return frames read.

        Real-time safe in the Python sense: no new arrays, no locks, no logging, never raises."""
        try:
            frames = out.shape[0]
            r = self._r
            n = self._w - r
            if n > frames:
                n = frames
            if n > 0:
                pos = r % self.capacity
                first = self.capacity - pos
                if first >= n:
                    np.copyto(out[:n], self.data[pos : pos + n])
                else:
                    np.copyto(out[:first], self.data[pos:])
                    np.copyto(out[first:n], self.data[: n - first])
                self._r = r + n  # publish only after the data is copied out
            else:
                n = 0
            if n < frames:
                out[n:] = 0.0
                self._underruns += 1
                self._underrun_frames += frames - n
            self._note_fill(self._w - self._r)
            return n
        except Exception:
            self._read_errors += 1
            try:
                out[...] = 0.0
            except Exception:
                pass
            return 0

    def _note_fill(self, fill: int) -> None:
        gen = self._stats_gen
        if self._seen_gen != gen:
            self._fill_min = fill
            self._seen_gen = gen  # after the value, so a reader never pairs the new gen with an old minimum
        elif fill < self._fill_min:
            self._fill_min = fill

    def clear(self) -> None:
        """Drop everything buffered. Consumer side: call it from the consumer or while it is stopped."""
        self._r = self._w
