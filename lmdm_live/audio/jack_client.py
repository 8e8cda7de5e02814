"""A JACK client's life: opening it quietly, releasing it whatever state it is in, the server probe, and
the port latency JACK-Client does not wrap. The output, the input and the recorder all own one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .backend import BackendUnavailable

# JACK2 never runs a period longer than this; scratch buffers this big survive any block-size change.
MAX_JACK_BLOCK = 8192
JACK_TIME_MASK = 0xFFFFFFFF  # JACK frame times are uint32 and wrap (after ~24 h at 48 kHz)
HALF_WRAP = 1 << 31


def import_jack() -> Any:
    try:
        import jack
    except OSError as e:  # JACK-Client is installed but libjack is not
        raise BackendUnavailable(f"the JACK library is not installed ({e})") from e
    return jack


@contextmanager
def quiet_jack(jack: Any) -> Iterator[None]:
    """Keep libjack from printing its connection errors to stderr while we probe (we report our own)."""
    jack.set_error_function(lambda _msg: None)
    try:
        yield
    finally:
        jack.set_error_function(None)


def open_client(jack: Any, client_name: str, server_name: str | None) -> Any:
    server = server_name or os.environ.get("JACK_DEFAULT_SERVER") or None
    with quiet_jack(jack):
        try:
            return jack.Client(client_name, no_start_server=True, servername=server)
        except jack.JackError as e:
            where = f"named {server!r} " if server else ""
            raise BackendUnavailable(f"no JACK server {where}is running ({e})") from None


def _release(jack: Any, client: Any, active: bool, server_gone: bool) -> None:
    """Deactivate (if active) and close a client. When the server is gone there is nothing left to
    release, so libjack's complaints about that are neither printed nor raised."""
    if server_gone:
        with quiet_jack(jack):
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
def release_on_error(release: Callable[[], None]) -> Iterator[None]:
    """Run `release` and re-raise if the block fails: a client half set up or half connected must not
    leave its ports in the graph."""
    try:
        yield
    except BaseException:
        release()
        raise


class JackClientOwner:
    """The one JACK client that `JackBackend`, `JackRecorder` and `JackInput` each hold, and its lifetime:
    active from construction (so other clients can connect to our ports before `start`), released exactly
    once, also when a connection fails or the server is gone. Subclasses define `_process`, `_on_xrun`
    and `stop`."""

    _jack: Any
    client: Any
    server_shut_down: bool

    def _open_jack_client(self, client_name: str, server_name: str | None) -> None:
        self._jack = import_jack()
        self.client = open_client(self._jack, client_name, server_name)
        self._active = False
        self._closed = False
        self.server_shut_down = False
        self._leave = False  # asks the process thread to end itself at its next cycle
        self._left = False  # set by the process thread as it goes

    def _activate(self) -> None:
        """Set the callbacks and go live; call inside `release_on_error(self.client.close)`."""
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
        with release_on_error(self.stop):
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
        jack = import_jack()
        open_client(jack, "lmdm-probe", server_name).close()
    except BackendUnavailable:
        return False
    return True


# --- port latency (JACK-Client does not wrap jack_port_get_latency_range) -------------------------


class _LatencyRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


_JACK_CAPTURE_LATENCY, _JACK_PLAYBACK_LATENCY = 0, 1  # jack_latency_callback_mode_t
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


def playback_latency(jack: Any, port: Any) -> int:
    """Max playback latency in frames of a port; 0 if libjack cannot tell."""
    return _port_latency(jack, port, _JACK_PLAYBACK_LATENCY)


def capture_latency(jack: Any, port: Any) -> int:
    """Max capture latency in frames of a port (e.g. a netJACK2 slave's return channel); 0 if unknown."""
    return _port_latency(jack, port, _JACK_CAPTURE_LATENCY)


def _port_latency(jack: Any, port: Any, mode: int) -> int:
    fn = _latency_function()
    if not fn:
        return 0
    rng = _LatencyRange()
    fn(int(jack._ffi.cast("uintptr_t", port._ptr)), mode, ctypes.byref(rng))
    return int(rng.max)
