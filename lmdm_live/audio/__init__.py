"""Audio out (and in): the SPSC ring, rate conversion, and the JACK, sounddevice and WAV-file backends.

Importing this package needs neither libjack nor PortAudio; a backend loads its library when opened.
"""

from .backend import (
    BACKEND_KINDS,
    AudioBackend,
    BackendUnavailable,
    CallbackStats,
    NoAudioDevice,
)
from .devices import open_backend, open_input
from .file_backend import FileBackend, FileInput
from .input import AudioInput
from .jack_backend import JackBackend, JackInput, JackRecorder
from .jack_client import jack_server_running
from .resample import ResampleFilter, StreamResampler
from .ring import AudioRing
from .sd_backend import (
    SoundDeviceBackend,
    SoundDeviceInput,
    find_output_device,
    output_devices,
    rescan_devices,
)
from .tone import ToneFeeder, dominant_hz, locate, sine_frames

__all__ = [
    "BACKEND_KINDS",
    "AudioBackend",
    "AudioInput",
    "AudioRing",
    "BackendUnavailable",
    "CallbackStats",
    "FileBackend",
    "FileInput",
    "JackBackend",
    "JackInput",
    "JackRecorder",
    "NoAudioDevice",
    "ResampleFilter",
    "SoundDeviceBackend",
    "SoundDeviceInput",
    "StreamResampler",
    "ToneFeeder",
    "dominant_hz",
    "find_output_device",
    "jack_server_running",
    "locate",
    "open_backend",
    "open_input",
    "output_devices",
    "rescan_devices",
    "sine_frames",
]
