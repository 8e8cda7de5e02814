"""Audio out (and in): the SPSC ring, rate conversion, and the JACK, sounddevice and WAV-file backends.

Importing this package needs neither libjack nor PortAudio; a backend loads its library when opened.
"""

from .backend import (
    BACKEND_KINDS,
    AudioBackend,
    BackendUnavailable,
    CallbackStats,
    NoAudioDevice,
    open_backend,
)
from .file_backend import FileBackend
from .input import AudioInput, FileInput, JackInput, SoundDeviceInput, open_input
from .jack_backend import JackBackend, JackRecorder, jack_server_running
from .resample import ResampleFilter, StreamResampler
from .ring import AudioRing
from .sd_backend import SoundDeviceBackend, find_output_device, output_devices, rescan_devices
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
