"""`FileBackend`: records the ring to a WAV file, for machines without sound and for recording a set.

realtime=True behaves like a sound card: one block per block period, on a schedule of absolute deadlines
(so sleeping late never accumulates drift), silence and an underrun when the ring runs dry.
realtime=False writes as fast as the producer delivers (offline rendering); nothing is padded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .backend import AudioBackend, CallbackStats
from .ring import AudioRing

SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


class FileBackend(AudioBackend):
    """Pulls `blocksize` frames at a time from the ring on a thread of its own and appends them to `path`."""

    name = "file"

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        channels: int = 2,
        blocksize: int = 1024,
        realtime: bool = False,
        subtype: str = "PCM_16",
    ) -> None:
        if channels < 1 or blocksize < 1 or sample_rate < 1:
            raise ValueError(f"bad file backend settings: {sample_rate} Hz, {channels} ch, block {blocksize}")
        if subtype not in SUBTYPES:
            raise ValueError(f"subtype must be one of {', '.join(SUBTYPES)}, got {subtype!r}")
        self.path = Path(path)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.blocksize = int(blocksize)
        self.realtime = bool(realtime)
        self.subtype = subtype
        self.stats = CallbackStats()
        self.frames_written = 0
        self.error: BaseException | None = None  # what stopped the writer thread, re-raised by stop()
        self._block = np.zeros((self.blocksize, self.channels), dtype=np.float32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._file = None
        self._ring: AudioRing | None = None
        self._closed = False

    def start(self, ring: AudioRing) -> None:
        from .wav import WavWriter

        if self._closed:
            raise RuntimeError("this FileBackend was stopped; open a new one")
        if self._thread is not None:
            return
        self._check_ring(ring)
        self._ring = ring
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # its header is rewritten every second: a killed process leaves a WAV every reader opens
        self._file = WavWriter(self.path, self.sample_rate, self.channels, subtype=self.subtype)
        run = self._run_realtime if self.realtime else self._run_fast
        self._thread = threading.Thread(
            target=self._guard, args=(run,), name="lmdm-file-backend", daemon=True
        )
        self._thread.start()

    def _guard(self, run: Callable[[], None]) -> None:
        try:
            run()
        except BaseException as e:  # kept for stop(); a writer thread has no one else to tell
            self.error = e

    def _write(self, frames: int) -> None:
        self._file.write(self._block[:frames])
        self.frames_written += frames

    def _run_realtime(self) -> None:
        period = self.blocksize / self.sample_rate
        t0 = time.perf_counter()
        k = 0
        while not self._stop.is_set():
            deadline = t0 + k * period
            wait = deadline - time.perf_counter()
            if wait > 0 and self._stop.wait(wait):
                break
            start = time.perf_counter()
            self._ring.read_into(self._block)  # underruns become silence, as on a device
            self._write(self.blocksize)
            self.stats.add(start, time.perf_counter())
            k += 1

    def _run_fast(self) -> None:
        ring = self._ring
        nap = min(0.002, self.blocksize / self.sample_rate / 4)
        while True:
            stopping = self._stop.is_set()
            n = min(ring.fill, self.blocksize)
            if n == self.blocksize or (stopping and n > 0):
                start = time.perf_counter()
                ring.read_into(self._block[:n])
                self._write(n)
                self.stats.add(start, time.perf_counter())
            elif stopping:
                return  # drained
            else:
                time.sleep(nap)

    def stop(self) -> None:
        """Stop the writer (fast mode first drains the ring), close the file; re-raise a writer error."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._file is not None:
            self._file.close()
        self._ring = None
        if self.error is not None:
            raise RuntimeError(f"writing {self.path} failed: {self.error}") from self.error

    @property
    def output_latency_s(self) -> float:
        """One block in real time (what a device of that block size would add); none offline."""
        return self.blocksize / self.sample_rate if self.realtime else 0.0

    @property
    def seconds_written(self) -> float:
        return self.frames_written / self.sample_rate
