"""The audio backend interface, callback timing statistics, and `open_backend`, which picks a backend.

A backend pulls frames from an `AudioRing` at the device's pace and knows nothing of what fills it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

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
