"""JACK output (`JackBackend`) and input capture (`JackRecorder`) through JACK-Client.

JACK sets the rate and the block size; we follow. The process callbacks only copy between preallocated
numpy arrays and the port buffers: no array allocation, locks, logging or exceptions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from .backend import AudioBackend, BackendUnavailable, CallbackStats
from .ring import AudioRing

# JACK2 never runs a period longer than this; scratch buffers this big survive any block-size change.
MAX_JACK_BLOCK = 8192


def _import_jack() -> Any:
    try:
        import jack
    except OSError as e:  # JACK-Client is installed but libjack is not
        raise BackendUnavailable(f"the JACK library is not installed ({e})") from e
    return jack


@contextmanager
def _quiet_jack(jack: Any) -> Iterator[None]:
    """Keep libjack from printing its connection errors to stderr while we probe (we report our own)."""
    jack.set_error_function(lambda _msg: None)
    try:
        yield
    finally:
        jack.set_error_function(None)


def _open_client(jack: Any, client_name: str, server_name: str | None) -> Any:
    server = server_name or os.environ.get("JACK_DEFAULT_SERVER") or None
    with _quiet_jack(jack):
        try:
            return jack.Client(client_name, no_start_server=True, servername=server)
        except jack.JackError as e:
            where = f"named {server!r} " if server else ""
            raise BackendUnavailable(f"no JACK server {where}is running ({e})") from None


def _release(jack: Any, client: Any, active: bool, server_gone: bool) -> None:
    """Deactivate (if active) and close a client. When the server is gone there is nothing left to
    release, so libjack's complaints about that are neither printed nor raised."""
    if server_gone:
        with _quiet_jack(jack):
            for step in ((client.deactivate,) if active else ()) + (client.close,):
                try:
                    step()
                except jack.JackError:
                    pass
        return
    try:
        if active:
            client.deactivate()
    finally:
        client.close()


@contextmanager
def _release_on_error(release: Callable[[], None]) -> Iterator[None]:
    """Run `release` and re-raise if the block fails: a client half set up or half connected must not
    leave its ports in the graph."""
    try:
        yield
    except BaseException:
        release()
        raise


class _JackClientOwner:
    """The one JACK client that `JackBackend`, `JackRecorder` and `JackInput` each hold, and its lifetime:
    active from construction (so other clients can connect to our ports before `start`), released exactly
    once, also when a connection fails or the server is gone. Subclasses define `_process`, `_on_xrun`
    and `stop`."""

    _jack: Any
    client: Any
    server_shut_down: bool

    def _open_jack_client(self, client_name: str, server_name: str | None) -> None:
        self._jack = _import_jack()
        self.client = _open_client(self._jack, client_name, server_name)
        self._active = False
        self._closed = False
        self.server_shut_down = False
        self._leave = False  # asks the process thread to end itself at its next cycle
        self._left = False  # set by the process thread as it goes

    def _activate(self) -> None:
        """Set the callbacks and go live; call inside `_release_on_error(self.client.close)`."""
        self.client.set_process_callback(self._process_or_leave)
        self.client.set_xrun_callback(self._on_xrun)
        self.client.set_shutdown_callback(self._on_shutdown)
        self.client.activate()
        self._active = True

    def _on_shutdown(self, _status: Any, _reason: str) -> None:
        self.server_shut_down = True

    def _connect_or_release(self, pairs: Callable[[], Iterable[tuple[Any, Any]]]) -> None:
        """Make the (source, destination) connections `pairs()` names, or `stop` (releasing the client)
        and re-raise: e.g. a source port that does not exist. `pairs` runs inside, as finding no port to
        connect to fails the same way."""
        with _release_on_error(self.stop):
            for src, dst in pairs():
                self.client.connect(src, dst)

    def _process_or_leave(self, frames: int) -> None:
        if self._leave:
            self._left = True
            raise self._jack.CallbackExit  # libjack then ends this thread itself, between cycles
        self._process(frames)

    def _leave_process_thread(self, timeout_s: float = 1.0, grace_s: float = 0.05) -> None:
        """Let the process thread end itself before the client is deactivated. libjack's deactivate cancels
        a process thread that is still running; cancelled inside a Python callback (e.g. waiting for the
        GIL) it takes the GIL's lock with it, and every Python thread waits forever. Once the callback has
        raised CallbackExit, libjack marks the client inactive and ends the thread, and deactivate has
        nothing left to cancel. The grace lets the callback's last Python lines run out first."""
        self._leave = True
        end = time.monotonic() + timeout_s
        while not self._left and time.monotonic() < end:  # no cycles come when the server is stuck
            time.sleep(0.002)
        if self._left:
            time.sleep(grace_s)

    def _release_client(self) -> None:
        """Deactivate and close the client once (ports and connections go with it), even if the server died."""
        if not self._closed:
            self._closed = True
            if self._active and not self.server_shut_down:
                self._leave_process_thread()
            _release(self._jack, self.client, self._active, self.server_shut_down)
            self._active = False


def jack_server_running(server_name: str | None = None) -> bool:
    """Whether a JACK server is up (never starts one)."""
    try:
        jack = _import_jack()
        _open_client(jack, "lmdm-probe", server_name).close()
    except BackendUnavailable:
        return False
    return True


class JackBackend(AudioBackend, _JackClientOwner):
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
        with _release_on_error(self.client.close):
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
            frames = max((_playback_latency(self._jack, p) for p in self.ports), default=0)
        return max(frames, self.blocksize) / self.sample_rate

    @property
    def connections(self) -> dict[str, list[str]]:
        """For each of our output ports, the names of the ports it feeds."""
        return {p.name: [c.name for c in self.client.get_all_connections(p)] for p in self.ports}


class JackRecorder(_JackClientOwner):
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
        with _release_on_error(self.client.close):
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


# --- port latency (JACK-Client does not wrap jack_port_get_latency_range) -------------------------


class _LatencyRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


_JACK_PLAYBACK_LATENCY = 1  # jack_latency_callback_mode_t: JackCaptureLatency = 0, JackPlaybackLatency = 1
_latency_fn: Any = None  # None: not looked up yet; False: libjack has none


def _latency_function() -> Any:
    global _latency_fn
    if _latency_fn is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("jack") or "libjack.so.0")
            fn = lib.jack_port_get_latency_range
        except (OSError, AttributeError):
            _latency_fn = False
        else:
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_LatencyRange)]
            fn.restype = None
            _latency_fn = fn
    return _latency_fn


def _playback_latency(jack: Any, port: Any) -> int:
    """Max playback latency in frames of a port of ours; 0 if libjack cannot tell."""
    fn = _latency_function()
    if not fn:
        return 0
    rng = _LatencyRange()
    fn(int(jack._ffi.cast("uintptr_t", port._ptr)), _JACK_PLAYBACK_LATENCY, ctypes.byref(rng))
    return int(rng.max)
