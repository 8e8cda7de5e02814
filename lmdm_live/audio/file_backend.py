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
from .input import AudioInput, downmix
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


# --- input ------------------------------------------------------------------------------------------


class FileInput(AudioInput):
    """A sound file (WAV, FLAC, anything libsndfile reads) played in as if it were live input.

    realtime=True makes samples available as wall-clock time passes from `start`; realtime=False makes
    the whole file available at once (offline renders, tests) and `read` never waits or fails. After
    the end of a file that does not `loop`, reads deliver silence and `ended` is True. The file is read
    and resampled whole when opened.
    """

    name = "file"

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        channels: int = 1,
        loop: bool = False,
        realtime: bool = False,
    ) -> None:
        import soundfile

        self.path = Path(path)
        try:
            data, rate = soundfile.read(str(self.path), dtype="float32", always_2d=True)
        except (RuntimeError, OSError) as e:  # soundfile raises LibsndfileError, a RuntimeError
            raise ValueError(
                f"cannot read audio file {str(self.path)!r}: {' '.join(str(e).split())}"
            ) from None
        self.device_rate = int(rate)
        self.device_channels = int(data.shape[1])
        self._setup(sample_rate, channels, buffer_s=1.0)
        rs = self._resampler
        mixed = downmix(data, self.channels)
        audio = np.concatenate([rs.process(mixed), rs.flush()])[self._skip :]
        self._skip = 0
        # Exactly as many samples as the file lasts at the model rate.
        self.audio = audio[: -(-len(data) * self.sample_rate // self.device_rate)]
        self.loop = bool(loop)
        self.realtime = bool(realtime)
        self.first_frame_time = 0
        self._t0: float | None = None

    @property
    def ended(self) -> bool:
        """The file's last sample has been read (never, when looping)."""
        return not self.loop and self.frames_read >= len(self.audio)

    @property
    def available(self) -> int:
        if not self.realtime:
            return 0 if self.ended else (1 << 62 if self.loop else len(self.audio) - self.frames_read)
        if self._t0 is None:
            return 0
        return max(0, int((time.monotonic() - self._t0) * self.sample_rate) - self.frames_read)

    def read(self, n: int, timeout: float = 0.0) -> np.ndarray | None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if self.realtime and not self._wait_for(n, timeout):
            return None
        out = self._slice(self.frames_read, n)
        self.frames_read += n
        return out

    def read_latest(self, n: int) -> np.ndarray:
        """Real time: the `n` samples up to now (silence before the start). Fast: the same as `read`."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not self.realtime:
            return self.read(n)
        end = self.frames_read + self.available
        out = np.zeros((self.channels, n), dtype=np.float32)
        start = max(end - n, 0)
        out[:, n - (end - start) :] = self._slice(start, end - start)
        self.frames_read = end
        return out

    def _slice(self, start: int, n: int) -> np.ndarray:
        total = len(self.audio)
        if self.loop and total:
            idx = (start + np.arange(n)) % total
            return self.audio[idx].T.copy()
        out = np.zeros((n, self.channels), dtype=np.float32)
        if start < total:
            got = self.audio[start : start + n]
            out[: len(got)] = got
        return out.T

    def start(self) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()
            self.first_monotonic = self._t0

    def stop(self) -> None:
        pass
