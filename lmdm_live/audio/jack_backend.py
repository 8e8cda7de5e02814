"""JACK output (`JackBackend`) and input capture (`JackRecorder`) through JACK-Client.

JACK sets the rate and the block size; we follow. The process callbacks only copy between preallocated
numpy arrays and the port buffers: no array allocation, locks, logging or exceptions.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import AudioBackend, BackendUnavailable, CallbackStats
from .input import MAX_BLOCK, AudioInput, match_ports, natural_key
from .jack_client import (
    HALF_WRAP,
    JACK_TIME_MASK,
    MAX_JACK_BLOCK,
    JackClientOwner,
    jack_server_running,
    playback_latency,
    release_on_error,
)
from .ring import AudioRing


class JackBackend(AudioBackend, JackClientOwner):
    """Plays a ring through JACK output ports `<client_name>:out_1..out_N`.

    The client is active (playing silence) from construction on, so its ports can be connected to
    before `start(ring)`; `start` hands over the ring and makes the connections asked for here.

    connect=True connects them to the physical playback ports, if there are any; a string connects them
    to the input ports whose names start with it (e.g. "system:playback_" or "reaper:in"); False leaves
    them unconnected.
    """

    name = "jack"

    def __init__(
        self,
        client_name: str = "lmdm-live",
        channels: int = 2,
        connect: bool | str = True,
        server_name: str | None = None,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self._open_jack_client(client_name, server_name)
        self.channels = int(channels)
        self.connect = connect
        self.sample_rate = int(self.client.samplerate)
        self.blocksize = int(self.client.blocksize)
        self.stats = CallbackStats()
        self.xruns = 0  # graph xruns JACK reported while we played a ring (they may be anyone's fault)
        self.blocksize_changes = 0  # the server changed its period while we ran (the callback follows)
        self.oversized_blocks = 0  # periods longer than MAX_JACK_BLOCK, played as silence
        self._ring: AudioRing | None = None
        self._scratch = np.zeros((max(MAX_JACK_BLOCK, self.blocksize), self.channels), dtype=np.float32)
        self._block_view = self._scratch[: self.blocksize]
        self._connected = False
        with release_on_error(self.client.close):
            self.ports = [self.client.outports.register(f"out_{i + 1}") for i in range(self.channels)]
            self.client.set_blocksize_callback(self._on_blocksize)
            # Active from the start (playing silence); start() then only hands over the ring and makes
            # our own connections.
            self._activate()

    @classmethod
    def available(cls, server_name: str | None = None) -> bool:
        return jack_server_running(server_name)

    @property
    def client_name(self) -> str:
        return self.client.name

    # --- real-time side ------------------------------------------------------------------------

    def _process(self, frames: int) -> None:
        t0 = time.perf_counter()
        ring = self._ring
        if frames == self._block_view.shape[0]:
            out = self._block_view
        elif frames <= self._scratch.shape[0]:
            out = self._scratch[:frames]  # a view: the block size changed and _on_blocksize has not run
        else:
            out = None
        if ring is None or out is None:
            if out is None:
                self.oversized_blocks += 1
            for port in self.ports:
                port.get_array().fill(0.0)
            return
        ring.read_into(out)
        for i, port in enumerate(self.ports):
            np.copyto(port.get_array(), out[:, i])
        self.stats.add(t0, time.perf_counter())  # timed only while playing: callbacks since start()

    def _on_xrun(self, _delayed_usecs: float) -> None:
        if self._ring is not None:  # while playing only: xruns during the engine's warm-up are harmless
            self.xruns += 1

    def _on_blocksize(self, blocksize: int) -> None:
        # Runs while the process cycle is suspended; only moves a view over the preallocated scratch.
        self.blocksize = int(blocksize)
        self.blocksize_changes += 1
        self._block_view = self._scratch[: min(self.blocksize, self._scratch.shape[0])]

    # --- control side --------------------------------------------------------------------------

    def start(self, ring: AudioRing) -> None:
        if self._closed:
            raise RuntimeError("this JackBackend was stopped; open a new one")
        self._check_ring(ring)
        self._ring = ring
        if not self._connected:
            self._connect_or_release(self._output_pairs)  # a backend that failed to start lets its client go
            self._connected = True

    def _output_pairs(self) -> list[tuple[Any, Any]]:
        if self.connect is False:
            return []
        if self.connect is True:
            targets = self.client.get_ports(is_audio=True, is_input=True, is_physical=True)
        else:
            prefix = str(self.connect)
            targets = [
                p for p in self.client.get_ports(is_audio=True, is_input=True) if p.name.startswith(prefix)
            ]
            if not targets:
                raise BackendUnavailable(f"no JACK input ports start with {prefix!r}")
        if self.channels == 1 and len(targets) >= 2:
            return [(self.ports[0], targets[0]), (self.ports[0], targets[1])]  # mono to both speakers
        return list(zip(self.ports, targets))

    def reconnect(self) -> int:
        """Connect each output to its target again where that connection is gone (a netJACK2 slave's
        system ports go and come back with its master). Returns how many connections were made."""
        if self._closed or not self._connected:
            return 0
        made = 0
        try:
            pairs = self._output_pairs()
            for src, dst in pairs:
                if dst.name not in {c.name for c in self.client.get_all_connections(src)}:
                    self.client.connect(src, dst)
                    made += 1
        except (BackendUnavailable, self._jack.JackError):
            pass  # the targets are not there (yet): the next call tries again
        return made

    def stop(self) -> None:
        """Deactivate and close the client (ports and connections go with it), even if the server died."""
        self._ring = None
        self._release_client()

    @property
    def output_latency_s(self) -> float:
        """Playback latency JACK reports for our ports (their downstream, e.g. the driver's periods).

        One period when that is unavailable (ports not connected, or libjack's latency call missing)."""
        frames = 0
        if not self._closed:
            frames = max((playback_latency(self._jack, p) for p in self.ports), default=0)
        return max(frames, self.blocksize) / self.sample_rate

    @property
    def connections(self) -> dict[str, list[str]]:
        """For each of our output ports, the names of the ports it feeds."""
        return {p.name: [c.name for c in self.client.get_all_connections(p)] for p in self.ports}


class JackRecorder(JackClientOwner):
    """Records JACK input ports `<client_name>:in_1..in_N` into a preallocated buffer of `max_seconds`.

    `connect_from[i]` (a port name) is connected to `in_{i+1}` on `start()`. Recording stops by itself
    when the buffer is full. For tests, and for audio input later on.
    """

    def __init__(
        self,
        client_name: str = "lmdm-rec",
        channels: int = 2,
        connect_from: Sequence[str] = (),
        max_seconds: float = 10.0,
        server_name: str | None = None,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if len(connect_from) > channels:
            raise ValueError(f"{len(connect_from)} sources for {channels} input ports")
        self._open_jack_client(client_name, server_name)
        self.channels = int(channels)
        self.connect_from = list(connect_from)
        self.sample_rate = int(self.client.samplerate)
        self.buffer = np.zeros((int(max_seconds * self.sample_rate), self.channels), dtype=np.float32)
        self.frames = 0  # frames recorded; only the process callback assigns it
        self.first_frame_time: int | None = None
        self.xruns = 0  # graph xruns JACK reported while recording
        self.stats = CallbackStats()
        self._recording = False
        with release_on_error(self.client.close):
            self.ports = [self.client.inports.register(f"in_{i + 1}") for i in range(self.channels)]
            self._activate()

    def _process(self, frames: int) -> None:
        if not self._recording:
            return
        t0 = time.perf_counter()
        pos = self.frames
        n = min(frames, self.buffer.shape[0] - pos)
        if n > 0:
            if pos == 0:  # JACK's clock at the first recorded frame: aligns the recording with other clients
                self.first_frame_time = self.client.last_frame_time
            for i, port in enumerate(self.ports):
                np.copyto(self.buffer[pos : pos + n, i], port.get_array()[:n])
            self.frames = pos + n  # publish after the copy
        self.stats.add(t0, time.perf_counter())

    def _on_xrun(self, _delayed_usecs: float) -> None:
        if self._recording:
            self.xruns += 1

    def start(self) -> None:
        """Connect the sources and record from the next period on."""
        self._connect_or_release(lambda: zip(self.connect_from, self.ports))
        self._recording = True

    def stop(self) -> None:
        """Stop recording and release the client (the recording stays in `audio`)."""
        self._recording = False
        self._release_client()

    @property
    def audio(self) -> np.ndarray:
        """What was recorded so far, (frames, channels)."""
        return self.buffer[: self.frames]

    def __enter__(self) -> JackRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- input ------------------------------------------------------------------------------------------


class JackInput(AudioInput, JackClientOwner):
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
        with release_on_error(self.client.close):
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
            return sorted((p.name for p in outs if p.is_physical), key=natural_key)
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
                gap = ((t - self._next_time + HALF_WRAP) & JACK_TIME_MASK) - HALF_WRAP
                if gap < 0:
                    skip = min(-gap, frames)
                    self.repeated_frames += skip
                    gap = 0
            if skip == frames:
                return
            self._next_time = (t + frames) & JACK_TIME_MASK
            n = frames - skip
            if n > MAX_BLOCK:
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
