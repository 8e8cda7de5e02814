"""The audio backend interface, callback timing statistics, and `open_backend`, which picks a backend.

A backend pulls frames from an `AudioRing` at the device's pace and knows nothing of what fills it.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from .ring import AudioRing

BACKEND_KINDS = ("jack", "sounddevice", "file")


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (no server, no such device). The message is one line for the user."""


class NoAudioDevice(BackendUnavailable):
    """No backend that plays sound was found (`open_backend(None)` tried them all); `tried` says why."""

    def __init__(self, tried: list[str] | None = None) -> None:
        self.tried = list(tried or [])
        super().__init__(
            "no audio device was found (no running JACK server, no sound card); "
            "`--backend file --out x.wav` records to a file instead"
        )


@dataclass
class CallbackStats:
    """How long the audio callback takes. Updated in the callback itself, so plain float arithmetic only."""

    callbacks: int = 0
    max_ms: float = 0.0
    total_ms: float = 0.0
    last_ms: float = 0.0

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.callbacks if self.callbacks else 0.0

    def add(self, start: float, end: float) -> None:
        """Count one callback that ran from `start` to `end` (time.perf_counter() seconds)."""
        ms = (end - start) * 1000.0
        self.callbacks += 1
        self.total_ms += ms
        self.last_ms = ms
        if ms > self.max_ms:
            self.max_ms = ms

    def reset(self) -> None:
        self.callbacks = 0
        self.max_ms = 0.0
        self.total_ms = 0.0
        self.last_ms = 0.0


class AudioBackend(ABC):
    """Plays an `AudioRing`. Subclasses set the attributes below in `__init__` (before `start`)."""

    name: str = "abstract"
    sample_rate: int
    channels: int
    blocksize: int
    stats: CallbackStats
    xruns: int = 0  # dropouts the device itself reports (not ring underruns, which the ring counts)

    @abstractmethod
    def start(self, ring: AudioRing) -> None:
        """Begin pulling frames from `ring` (its channel count must match the backend's)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop pulling and release the device. Safe to call twice."""

    @property
    @abstractmethod
    def output_latency_s(self) -> float:
        """Seconds from a frame leaving the ring to it being heard, as far as the backend can tell."""

    def _check_ring(self, ring: AudioRing) -> None:
        if ring.channels != self.channels:
            raise ValueError(
                f"the ring has {ring.channels} channels, the {self.name} backend {self.channels}"
            )

    def __enter__(self) -> AudioBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.sample_rate} Hz, {self.channels} ch, block {self.blocksize}>"


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


def _backend_class(kind: str) -> Any:
    if kind == "jack":
        from .jack_backend import JackBackend

        return JackBackend
    if kind == "sounddevice":
        from .sd_backend import SoundDeviceBackend

        return SoundDeviceBackend
    from .file_backend import FileBackend

    return FileBackend


def _accepted(fn: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """The subset of `opts` that `fn` (a function or class) takes as keyword arguments."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(opts)
    return {k: v for k, v in opts.items() if k in params}
