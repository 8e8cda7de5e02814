"""Opening a device by name: `open_backend` picks the output driver, `open_input` parses an input spec.

The drivers import the base classes; only this module knows them all, so nothing imports back into it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from .backend import BACKEND_KINDS, AudioBackend, BackendUnavailable, NoAudioDevice
from .file_backend import FileBackend, FileInput
from .input import AudioInput
from .jack_backend import JackBackend, JackInput
from .sd_backend import SoundDeviceBackend, SoundDeviceInput


def open_backend(kind: str | None, **opts: Any) -> AudioBackend:
    """Open the backend `kind` ("jack", "sounddevice", "file") with `opts` for its constructor.

    kind=None picks the first that works: JACK if a server is already running (one is never started),
    then sounddevice if a real output device exists; otherwise raises `NoAudioDevice`. Options a
    candidate does not take are left out for it, so one set of options can serve all of them.
    """
    if kind is not None and kind not in BACKEND_KINDS:
        raise ValueError(f"unknown audio backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    if kind is not None:
        return _backend_class(kind)(**opts)
    tried = []
    for candidate in ("jack", "sounddevice"):
        cls = _backend_class(candidate)
        try:
            if not cls.available(**_accepted(cls.available, opts)):
                tried.append(f"{candidate}: none")
                continue
            return cls(**_accepted(cls, opts))
        except (BackendUnavailable, OSError, ImportError) as e:
            tried.append(f"{candidate}: {' '.join(str(e).split())}")
    raise NoAudioDevice(tried)


def _backend_class(kind: str) -> type[AudioBackend]:
    if kind == "jack":
        return JackBackend
    if kind == "sounddevice":
        return SoundDeviceBackend
    return FileBackend


def _accepted(fn: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """The subset of `opts` that `fn` (a function or class) takes as keyword arguments."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(opts)
    return {k: v for k, v in opts.items() if k in params}


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
