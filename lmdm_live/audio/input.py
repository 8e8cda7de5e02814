"""Live audio input: another instrument, scsynth or a microphone, delivered at the model's rate.

The device callback only copies into a preallocated `AudioRing` at the device's rate and channel count.
The reader (the inference thread) drains it on its own thread: it downmixes, resamples to the model's rate
with `StreamResampler` and keeps the result in a FIFO, so `read`/`read_latest` never touch the callback.

Timing: every delivered sample has a place on the device's clock. Input sample k (model rate) was
captured at device frame `frame_time(k)`, the same clock the output's callback sees (for JACK: the frame
time every client shares). Frames that were lost (the reader was too slow and the ring was full, or a
JACK callback missed a period) come back as silence of the same length, so the mapping holds from the
first sample to the last. The ring carries one extra channel for this: the count of frames lost just before each
frame, written by the callback together with the audio.
"""

from __future__ import annotations

import fnmatch
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from .resample import StreamResampler
from .ring import AudioRing

# The lost-frames count rides in a float32 channel, exact up to here; a longer loss is cut to it.
_MAX_GAP = (1 << 24) - 1
MAX_BLOCK = 8192  # longest device period the callback takes (JACK2's maximum)


def downmix(x: np.ndarray, channels: int) -> np.ndarray:
    """(frames, d) -> (frames, channels): channel c is the mean of device channels c, c + channels, ...;
    with fewer device channels than asked, they repeat (mono feeds both sides)."""
    d = x.shape[1]
    if d == channels:
        return x
    if d < channels:
        return x[:, np.arange(channels) % d]
    out = np.zeros((x.shape[0], channels), dtype=np.float32)
    counts = np.zeros(channels)
    for i in range(d):
        out[:, i % channels] += x[:, i]
        counts[i % channels] += 1
    return out / counts.astype(np.float32)


class _Fifo:
    """The reader's model-rate buffer: consumer-side only, so plain numpy and no synchronisation."""

    def __init__(self, channels: int, capacity: int) -> None:
        self.buf = np.zeros((capacity, channels), dtype=np.float32)
        self.start = 0
        self.end = 0
        self.dropped = 0  # oldest frames let go because the reader never came for them

    def __len__(self) -> int:
        return self.end - self.start

    def push(self, x: np.ndarray) -> None:
        cap = self.buf.shape[0]
        if len(x) >= cap:
            self.dropped += len(self) + len(x) - cap
            self.buf[:] = x[len(x) - cap :]
            self.start, self.end = 0, cap
            return
        if self.end + len(x) > cap:
            keep = min(len(self), cap - len(x))
            self.dropped += len(self) - keep
            self.buf[:keep] = self.buf[self.end - keep : self.end]
            self.start, self.end = 0, keep
        self.buf[self.end : self.end + len(x)] = x
        self.end += len(x)

    def pop(self, n: int) -> np.ndarray:
        out = self.buf[self.start : self.start + n].copy()
        self.start += n
        return out


class AudioInput(ABC):
    """Input audio at the model's `sample_rate`, `channels` wide, in arrays shaped (channels, n).

    One thread reads (`read`, `read_latest`, `available`); the device writes from its own. Subclasses set
    `name`, `device_rate` and `device_channels` and call `_setup` in `__init__`.
    """

    name: str = "abstract"
    sample_rate: int  # the model's rate: what read() delivers
    channels: int
    device_rate: int
    device_channels: int
    first_frame_time: float | None = None  # device clock at input frame 0 (None until audio arrives)
    first_monotonic: float | None = None  # time.monotonic() at the first callback: a coarse cross-clock tie

    def _setup(self, sample_rate: int, channels: int, buffer_s: float) -> None:
        if sample_rate < 1 or channels < 1:
            raise ValueError(f"bad input settings: {sample_rate} Hz, {channels} ch")
        if buffer_s <= 0:
            raise ValueError(f"buffer_s must be > 0, got {buffer_s}")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.ring = AudioRing(self.device_channels + 1, max(int(buffer_s * self.device_rate), MAX_BLOCK))
        self._scratch = np.zeros((MAX_BLOCK, self.device_channels + 1), dtype=np.float32)
        self._resampler = StreamResampler(self.device_rate, self.sample_rate, self.channels)
        # The filter delays its output; dropping its whole-sample part makes sample k line up with device
        # frame k * device_rate / sample_rate (less the fraction `_lag` of a sample, kept in frame_time).
        delay = self._resampler.latency_frames
        self._skip = int(delay)
        self._lag = delay - self._skip
        self._fifo = _Fifo(self.channels, int(2 * buffer_s * self.sample_rate) + MAX_BLOCK)
        self._pending_gap = 0  # callback-owned: frames lost and not yet marked in the ring
        self.overruns = 0  # callbacks that dropped their block because the ring was full
        self.overrun_frames = 0
        self.lost_frames = 0  # all device frames replaced by silence (overruns and skipped periods)
        self.callback_errors = 0
        self.xruns = 0  # dropouts the device itself reported
        self.frames_read = 0  # model-rate index of the next sample read() returns

    # --- real-time side ------------------------------------------------------------------------

    def _capture(self, data: Any, frames: int, gap: int) -> None:
        """Callback side: queue `frames` device frames (filled into `_scratch[:frames, :-1]` by the caller,
        or taken from `data` when it is not None), after `gap` lost frames. Never raises."""
        try:
            if frames <= 0:
                self._pending_gap += gap
                self.lost_frames += gap
                return
            block = self._scratch[:frames]
            if data is not None:
                np.copyto(block[:, :-1], data)
            pending = self._pending_gap + gap
            if self.ring.free < frames:
                self.overruns += 1
                self.overrun_frames += frames
                self._pending_gap = pending + frames
                self.lost_frames += gap + frames
                return
            mark = pending if pending < _MAX_GAP else _MAX_GAP
            block[:, -1] = 0.0
            block[0, -1] = mark
            self._pending_gap = 0
            self.lost_frames += gap
            self.ring.write(block)
        except Exception:
            self.callback_errors += 1

    # --- reader side ---------------------------------------------------------------------------

    def _pump(self) -> None:
        """Move what the callback queued through gap filling, downmix and resampling into the FIFO."""
        n = self.ring.fill
        if n <= 0:
            return
        raw = np.empty((n, self.device_channels + 1), dtype=np.float32)
        self.ring.read_into(raw)
        marks = np.flatnonzero(raw[:, -1])
        if len(marks):
            pieces, prev = [], 0
            for i in marks:
                pieces += [raw[prev:i, :-1], np.zeros((int(raw[i, -1]), self.device_channels), np.float32)]
                prev = i
            pieces.append(raw[prev:, :-1])
            audio = np.concatenate(pieces)
        else:
            audio = raw[:, :-1]
        out = self._resampler.process(downmix(audio, self.channels))
        if self._skip:
            cut = min(self._skip, len(out))
            out, self._skip = out[cut:], self._skip - cut
        self._fifo.push(out)

    @property
    def available(self) -> int:
        """Model-rate samples `read` can return now without waiting."""
        self._pump()
        return len(self._fifo)

    @property
    def dropped(self) -> int:
        """Model-rate samples let go unread because the reader left them for longer than the buffer."""
        return self._fifo.dropped

    def read(self, n: int, timeout: float = 0.0) -> np.ndarray | None:
        """The next `n` samples in order, (channels, n) float32; None (nothing consumed) if they are not
        all there within `timeout` seconds. The default never waits: the inference thread must not stall."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not self._wait_for(n, timeout):
            return None
        self.frames_read += n
        return self._fifo.pop(n).T

    def _wait_for(self, n: int, timeout: float) -> bool:
        """Whether `n` samples became available within `timeout` seconds. It polls: the device's side
        must never lock or signal, so there is nothing to block on."""
        deadline = time.monotonic() + timeout
        while self.available < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.002))
        return True

    def read_latest(self, n: int) -> np.ndarray:
        """The most recent `n` samples, (channels, n), silence in front if fewer have arrived. Everything
        older is consumed, so the block ends at `frames_read` and starts at `frames_read - n`."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        have = self.available
        if have > n:
            self._fifo.pop(have - n)
        got = self._fifo.pop(min(n, have))
        self.frames_read += have
        if len(got) < n:
            got = np.concatenate([np.zeros((n - len(got), self.channels), np.float32), got])
        return got.T

    def frame_time(self, k: float) -> float | None:
        """The device frame time at which input sample `k` was captured (None before the first audio).

        JACK: JACK's frame clock (the `last_frame_time` every client sees in its process cycle), exact and
        unwrapped (compare modulo 2**32 after a day). sounddevice: PortAudio's stream time in seconds times
        the device rate, as exact as the first callback's timestamp. File: the file's frame index."""
        if self.first_frame_time is None:
            return None
        return self.first_frame_time + (k - self._lag) * self.device_rate / self.sample_rate

    @property
    def latency_frames(self) -> float:
        """Fraction of a model-rate sample by which resampling delays input (the rest is compensated)."""
        return self._lag

    @abstractmethod
    def start(self) -> None:
        """Begin capturing."""

    @abstractmethod
    def stop(self) -> None:
        """Stop capturing and release the device; what was captured can still be read. Safe twice."""

    def __enter__(self) -> AudioInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.device_rate} Hz x{self.device_channels} -> "
            f"{self.sample_rate} Hz x{self.channels}>"
        )


def natural_key(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def match_ports(names: Sequence[str], pattern: str) -> list[str]:
    """Port names that `pattern` picks, in natural order: the exact name, else a glob ("system:capture_*"),
    else a regular expression matching the whole name."""
    if pattern in names:
        return [pattern]
    found = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not found:
        try:
            rx = re.compile(pattern)
        except re.error:
            rx = None
        found = [n for n in names if rx is not None and rx.fullmatch(n)]
    return sorted(found, key=natural_key)
