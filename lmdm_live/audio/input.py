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
from pathlib import Path
from typing import Any

import numpy as np

from .backend import BackendUnavailable
from .jack_backend import _JackClientOwner, _release_on_error
from .resample import StreamResampler
from .ring import AudioRing
from .sd_backend import _close_stream, _import_sd, _open_stream

# The lost-frames count rides in a float32 channel, exact up to here; a longer loss is cut to it.
_MAX_GAP = (1 << 24) - 1
_JACK_TIME_MASK = 0xFFFFFFFF  # JACK frame times are uint32 and wrap (after ~24 h at 48 kHz)
_HALF_WRAP = 1 << 31
_MAX_BLOCK = 8192  # longest device period the callback takes (JACK2's maximum)


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
        self.ring = AudioRing(self.device_channels + 1, max(int(buffer_s * self.device_rate), _MAX_BLOCK))
        self._scratch = np.zeros((_MAX_BLOCK, self.device_channels + 1), dtype=np.float32)
        self._resampler = StreamResampler(self.device_rate, self.sample_rate, self.channels)
        # The filter delays its output; dropping its whole-sample part makes sample k line up with device
        # frame k * device_rate / sample_rate (less the fraction `_lag` of a sample, kept in frame_time).
        delay = self._resampler.latency_frames
        self._skip = int(delay)
        self._lag = delay - self._skip
        self._fifo = _Fifo(self.channels, int(2 * buffer_s * self.sample_rate) + _MAX_BLOCK)
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


# --- JACK -----------------------------------------------------------------------------------------


def _natural_key(name: str) -> list[Any]:
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
    return sorted(found, key=_natural_key)


class JackInput(AudioInput, _JackClientOwner):
    """Captures JACK input ports `<client_name>:in_1..in_N`.

    connect=True connects the physical capture ports; a list of names, globs or regexes connects the
    output ports they match (in order: source i feeds in_{i % N + 1}; a single source feeds every port);
    False connects nothing (other clients may connect to us). N is `ports`, by default as many as there
    are sources (at least `channels`). Connections are made by `start`; the client is active from
    construction, like `JackBackend`, so others can connect first.
    """

    name = "jack"

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        connect: bool | Sequence[str] = True,
        client_name: str = "lmdm-in",
        ports: int | None = None,
        buffer_s: float = 2.0,
        server_name: str | None = None,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self._open_jack_client(client_name, server_name)
        self._running = False
        with _release_on_error(self.client.close):
            self.sources = self._resolve(connect)
            self.device_rate = int(self.client.samplerate)
            self.device_channels = int(ports or max(channels, len(self.sources)))
            self._setup(sample_rate, channels, buffer_s)
            self._next_time = -1  # JACK frame time the next callback should start at
            self.repeated_frames = 0  # frames JACK handed us twice (after an xrun), dropped
            self.ports = [self.client.inports.register(f"in_{i + 1}") for i in range(self.device_channels)]
            self._activate()

    def _resolve(self, connect: bool | Sequence[str]) -> list[str]:
        if connect is False:
            return []
        outs = self.client.get_ports(is_audio=True, is_output=True)
        if connect is True:
            return sorted((p.name for p in outs if p.is_physical), key=_natural_key)
        if isinstance(connect, str):
            connect = [connect]
        names = [p.name for p in outs]
        found: list[str] = []
        for pattern in connect:
            hits = match_ports(names, pattern)
            if not hits:
                raise BackendUnavailable(f"no JACK output port matches {pattern!r}")
            found += [h for h in hits if h not in found]
        return found

    @property
    def client_name(self) -> str:
        return self.client.name

    def _process(self, frames: int) -> None:
        if not self._running:
            return
        try:
            t = self.client.last_frame_time
            skip = 0
            if self._next_time < 0:
                self.first_monotonic = time.monotonic()
                self.first_frame_time = t  # before the first frame is published
                gap = 0
            else:
                # Signed distance from where the last period ended: > 0, periods we missed (refilled with
                # silence); < 0, a period run again after an xrun (its repeated frames are dropped).
                gap = ((t - self._next_time + _HALF_WRAP) & _JACK_TIME_MASK) - _HALF_WRAP
                if gap < 0:
                    skip = min(-gap, frames)
                    self.repeated_frames += skip
                    gap = 0
            if skip == frames:
                return
            self._next_time = (t + frames) & _JACK_TIME_MASK
            n = frames - skip
            if n > _MAX_BLOCK:
                self._capture(None, 0, gap + n)
                return
            block = self._scratch
            for i, port in enumerate(self.ports):
                np.copyto(block[:n, i], port.get_array()[skip:])
            self._capture(None, n, gap)
        except Exception:
            self.callback_errors += 1

    def _on_xrun(self, _delayed_usecs: float) -> None:
        if self._running:
            self.xruns += 1

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("this JackInput was stopped; open a new one")
        if self._running:
            return
        self._connect_or_release(self._source_pairs)
        self._running = True

    def _source_pairs(self) -> list[tuple[str, Any]]:
        if len(self.sources) == 1:
            return [(self.sources[0], p) for p in self.ports]
        return [(s, self.ports[i % len(self.ports)]) for i, s in enumerate(self.sources)]

    def stop(self) -> None:
        self._running = False
        self._release_client()

    @property
    def connections(self) -> dict[str, list[str]]:
        """For each of our input ports, the names of the ports feeding it."""
        return {p.name: [c.name for c in self.client.get_all_connections(p)] for p in self.ports}


# --- sounddevice ----------------------------------------------------------------------------------


def input_devices(hostapi: str | None = None) -> list[dict[str, Any]]:
    """Devices that can capture, each with its `index` and `hostapi_name`; optionally of one host API."""
    sd = _import_sd()
    apis = sd.query_hostapis()
    found = []
    for index, info in enumerate(sd.query_devices()):
        api = apis[info["hostapi"]]["name"]
        if info["max_input_channels"] > 0 and (hostapi is None or hostapi.lower() in api.lower()):
            found.append({**info, "index": index, "hostapi_name": api})
    return found


def find_input_device(device: int | str | None = None, hostapi: str | None = None) -> dict[str, Any]:
    """Resolve `device` (index, exact or partial name, None for the default) to an input device."""
    sd = _import_sd()
    devs = input_devices(hostapi)
    where = f" on host API {hostapi!r}" if hostapi else ""
    if not devs:
        raise BackendUnavailable(f"PortAudio has no input device{where}")
    listing = ", ".join(f"{d['index']} {d['name']!r} ({d['hostapi_name']})" for d in devs)
    if device is None:
        if hostapi is None:
            default = sd.default.device[0]
        else:
            default = sd.query_hostapis(devs[0]["hostapi"])["default_input_device"]
        return next((d for d in devs if d["index"] == default), devs[0])
    if isinstance(device, int) or str(device).strip().isdigit():
        hit = [d for d in devs if d["index"] == int(device)]
    else:
        query = str(device).strip().lower()
        exact = [d for d in devs if d["name"].lower() == query]
        hit = exact or [d for d in devs if query in d["name"].lower()]
    if not hit:
        raise BackendUnavailable(f"no input device matches {device!r}{where}; there are: {listing}")
    return hit[0]


class SoundDeviceInput(AudioInput):
    """Captures a PortAudio input stream (ALSA, PulseAudio, CoreAudio, WASAPI, JACK).

    `device_channels` (default: `channels`, at most what the device has) are opened and downmixed.
    """

    name = "sounddevice"

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        device: int | str | None = None,
        device_rate: int | None = None,
        device_channels: int | None = None,
        blocksize: int = 256,
        latency: str | float = "low",
        hostapi: str | None = None,
        buffer_s: float = 2.0,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.device = find_input_device(device, hostapi)
        self.device_rate = int(device_rate or self.device["default_samplerate"])
        self.device_channels = int(min(device_channels or channels, self.device["max_input_channels"]))
        self._setup(sample_rate, channels, buffer_s)
        self._closed = False
        self.stream = _open_stream(
            "input", self.device, self.device_rate, self.device_channels, blocksize, latency, self._callback
        )
        self.blocksize = int(self.stream.blocksize) or int(blocksize)

    def _callback(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        try:
            if self.first_frame_time is None:
                # PortAudio's capture time of the first frame, to within the callback's jitter (JACK host
                # API: about a period). Lost frames are not inferred from these times, jitter would fake
                # them: only our own overruns are refilled; the device's (input_overflow) are counted.
                self.first_monotonic = time.monotonic()
                adc = time_info.inputBufferAdcTime or time_info.currentTime
                self.first_frame_time = adc * self.device_rate
            if status and status.input_overflow:
                self.xruns += 1
            if frames > _MAX_BLOCK:
                self._capture(None, 0, frames)
            else:
                self._capture(indata, frames, 0)
        except Exception:
            self.callback_errors += 1

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("this SoundDeviceInput was stopped; open a new one")
        if not self.stream.active:
            self.stream.start()

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        _close_stream(self.stream)

    @property
    def hostapi_name(self) -> str:
        return self.device["hostapi_name"]


# --- file -----------------------------------------------------------------------------------------


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


# --- factory --------------------------------------------------------------------------------------

INPUT_SPECS = (
    '"jack", "jack:PORT[,PORT...]" (names, globs or regexes), "sd", "sd:DEVICE" or a sound file path'
)


def open_input(spec: str, sample_rate: int, channels: int = 1, **opts: Any) -> AudioInput:
    """Open the input `spec` names; `opts` go to its constructor.

    "jack" connects the physical capture ports, "jack:SuperCollider:out_1,SuperCollider:out_2" (or
    "jack:SuperCollider:out_*") those ports, "jack:" none; "sd" the default PortAudio input, "sd:DEVICE" a
    device by index or name; anything else must be an existing sound file (played in faster than real
    time unless realtime=True)."""
    spec = str(spec).strip()
    kind, sep, rest = spec.partition(":")
    if kind == "jack":
        if not sep:
            connect: bool | list[str] = True
        else:
            connect = [p.strip() for p in rest.split(",") if p.strip()] or False
        return JackInput(sample_rate, channels, connect=connect, **opts)
    if kind in ("sd", "sounddevice"):
        device: int | str | None = rest.strip() or None
        return SoundDeviceInput(sample_rate, channels, device=device, **opts)
    if spec and Path(spec).is_file():
        return FileInput(spec, sample_rate, channels, **opts)
    raise ValueError(f"audio input {spec!r} is not a device and no such file exists; give {INPUT_SPECS}")
