"""`SoundDeviceBackend`: output through PortAudio (python-sounddevice): ALSA, PulseAudio, CoreAudio, WASAPI, JACK.

PortAudio lists JACK as a host API only if its build has JACK support and a JACK server was running when
PortAudio started (at `import sounddevice`); `rescan_devices()` looks again.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from .backend import AudioBackend, BackendUnavailable, CallbackStats
from .input import MAX_BLOCK, AudioInput
from .ring import AudioRing

# Devices that accept audio and drop it: never a "real" device when choosing a backend automatically.
_NULL_NAMES = ("null", "nullpcm", "dummy")


def _import_sd() -> Any:
    try:
        import sounddevice
    except OSError as e:  # the wheel is installed but the system's libportaudio is not
        raise BackendUnavailable(f"the PortAudio library is not installed ({e})") from e
    return sounddevice


def rescan_devices() -> None:
    """Make PortAudio list devices again (e.g. a JACK server started after import). No stream may be open."""
    sd = _import_sd()
    sd._terminate()
    sd._initialize()


def output_devices(hostapi: str | None = None) -> list[dict[str, Any]]:
    """Devices that can play, each with its `index` and `hostapi_name`; optionally of one host API only."""
    sd = _import_sd()
    apis = sd.query_hostapis()
    found = []
    for index, info in enumerate(sd.query_devices()):
        if info["max_output_channels"] <= 0:
            continue
        api = apis[info["hostapi"]]["name"]
        if hostapi is not None and hostapi.lower() not in api.lower():
            continue
        found.append({**info, "index": index, "hostapi_name": api})
    return found


def _open_stream(
    direction: Literal["input", "output"],
    device: dict[str, Any],
    samplerate: int,
    channels: int,
    blocksize: int,
    latency: str | float,
    callback: Any,
) -> Any:
    """A float32 PortAudio stream ("input" or "output") on `device`. PortAudio's errors span lines; the
    user gets one `BackendUnavailable` line that names the device and the rate."""
    sd = _import_sd()
    stream_class = sd.InputStream if direction == "input" else sd.OutputStream
    try:
        return stream_class(
            samplerate=samplerate,
            blocksize=blocksize,
            device=device["index"],
            channels=channels,
            dtype="float32",
            latency=latency,
            callback=callback,
        )
    except sd.PortAudioError as e:
        msg = " ".join(str(e).split())
        raise BackendUnavailable(
            f"cannot open {direction} device {device['name']!r} at {samplerate} Hz: {msg}"
        ) from None


def _close_stream(stream: Any) -> None:
    """Stop `stream` and close it even if stopping fails, so PortAudio always lets go of the device."""
    try:
        stream.stop()
    finally:
        stream.close()


def _is_real(dev: dict[str, Any]) -> bool:
    name = dev["name"].lower()
    return not any(name == n or name.startswith(n + " ") or name.startswith(n + ":") for n in _NULL_NAMES)


def _describe(devs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d['index']} {d['name']!r} ({d['hostapi_name']})" for d in devs) or "none"


def find_output_device(device: int | str | None = None, hostapi: str | None = None) -> dict[str, Any]:
    """Resolve `device` (index, name or a case-insensitive part of it, None for the default) to a device.

    An exact name wins over a partial match; among partial matches, PortAudio's first. Raises
    `BackendUnavailable` with a one-line message listing what there is when nothing fits."""
    sd = _import_sd()
    devs = output_devices(hostapi)
    where = f" on host API {hostapi!r}" if hostapi else ""
    if not devs:
        raise BackendUnavailable(f"PortAudio has no output device{where}")
    if device is None:
        if hostapi is None:
            default = sd.default.device[1]
        else:
            default = sd.query_hostapis(devs[0]["hostapi"])["default_output_device"]
        for d in devs:
            if d["index"] == default:
                return d
        return devs[0]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        index = int(device)
        for d in devs:
            if d["index"] == index:
                return d
        raise BackendUnavailable(f"no output device with index {index}{where}; there are: {_describe(devs)}")
    query = str(device).strip().lower()
    exact = [d for d in devs if d["name"].lower() == query]
    partial = [d for d in devs if query in d["name"].lower()]
    if exact or partial:
        return (exact or partial)[0]
    raise BackendUnavailable(f"no output device matches {device!r}{where}; there are: {_describe(devs)}")


class SoundDeviceBackend(AudioBackend):
    """Plays a ring through a PortAudio output stream whose callback only copies from the ring.

    The stream is opened here (so rate and latency are known before `start`) and started by `start`.
    `hostapi` restricts the device choice to one host API by name part, e.g. "JACK" or "ALSA".
    """

    name = "sounddevice"

    def __init__(
        self,
        device: int | str | None = None,
        samplerate: int | None = None,
        blocksize: int = 256,
        latency: str | float = "low",
        channels: int = 2,
        hostapi: str | None = None,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.device = find_output_device(device, hostapi)
        if channels > self.device["max_output_channels"]:
            raise BackendUnavailable(
                f"output device {self.device['name']!r} has {self.device['max_output_channels']} channels, "
                f"{channels} were asked for"
            )
        self.channels = int(channels)
        self.sample_rate = int(samplerate or self.device["default_samplerate"])
        self.stats = CallbackStats()
        self.xruns = 0  # PortAudio's output-underflow flags: the device ran dry (not our ring)
        self._ring: AudioRing | None = None
        self._closed = False
        self.stream = _open_stream(
            "output", self.device, self.sample_rate, self.channels, blocksize, latency, self._callback
        )
        self.blocksize = int(self.stream.blocksize) or int(blocksize)

    @classmethod
    def available(cls, device: int | str | None = None, hostapi: str | None = None) -> bool:
        """Whether a real output device (not a null sink) is there to play on."""
        try:
            if device is not None:
                return _is_real(find_output_device(device, hostapi))
            return any(_is_real(d) for d in output_devices(hostapi))
        except BackendUnavailable:
            return False

    def _callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        t0 = time.perf_counter()
        ring = self._ring
        if ring is None:
            outdata.fill(0.0)
        else:
            ring.read_into(outdata)
        if status and status.output_underflow:
            self.xruns += 1
        self.stats.add(t0, time.perf_counter())

    def start(self, ring: AudioRing) -> None:
        if self._closed:
            raise RuntimeError("this SoundDeviceBackend was stopped; open a new one")
        self._check_ring(ring)
        self._ring = ring
        if not self.stream.active:
            self.stream.start()

    def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            _close_stream(self.stream)
        finally:
            self._ring = None

    @property
    def output_latency_s(self) -> float:
        """PortAudio's output latency for the open stream."""
        return float(self.stream.latency)

    @property
    def hostapi_name(self) -> str:
        return self.device["hostapi_name"]


# --- input ------------------------------------------------------------------------------------------


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
            if frames > MAX_BLOCK:
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
