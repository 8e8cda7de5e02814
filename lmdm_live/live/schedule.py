"""What the engine keeps in order: control changes waiting for their block, the blocks queued but not yet
heard, its running figures, and the latency presets that trade response for safety.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .stream import StreamParams, StreamSnapshot

HEADROOM_PRESETS_MS = {"tight": 85.0, "normal": 170.0, "safe": 340.0}


@dataclass(frozen=True)
class LatencyPreset:
    """How fast a change is heard, against what it costs. Both cut a change into the block playing (a jump
    mid-block, 5 ms crossfaded) instead of waiting for its end; "low" also keeps less audio queued and
    halves the model's denoising steps (at least 2): a remade block must be ready before its splice point,
    so its time is most of a change's delay. Measured choices: the 16 kHz model (8 steps) plays 4, the
    44.1 kHz one (4) plays 2 (docs/performance.md). Splicing in "normal" too is safe since a flood of
    changes remakes blocks only from a refilled ring."""

    headroom: str  # a HEADROOM_PRESETS_MS key
    splice: bool
    step_share: float = 1.0  # of the model's own steps, when none are asked for

    def steps(self, model_steps: int) -> int:
        """The steps this preset plays a model at whose own are `model_steps`."""
        if self.step_share >= 1.0:
            return model_steps
        return min(model_steps, max(2, round(model_steps * self.step_share)))


LATENCY_PRESETS = {"normal": LatencyPreset("normal", True), "low": LatencyPreset("tight", True, 0.5)}
CHANGE_KINDS = ("params", "gain", "drop", "reset", "seed")


@dataclass(frozen=True)
class Change:
    """One control change. `at`: "now"/"block" (next block), "beat"/"bar" (first block boundary at or
    after the next beat/bar of the stream's clock), or a `time.monotonic()` instant: the first block heard at or
    after it."""

    kind: str
    value: Any
    at: str | float = "now"
    submitted: float = field(default_factory=time.monotonic)
    id: int = 0
    target_s: float | None = None  # beat/bar: the stream time (s) of the grid line it waits for

    def __post_init__(self) -> None:
        if self.kind not in CHANGE_KINDS:
            raise ValueError(f"unknown change kind {self.kind!r}; kinds: {', '.join(CHANGE_KINDS)}")
        if isinstance(self.at, str) and self.at not in ("now", "block", "beat", "bar"):
            raise ValueError(f"at must be 'now', 'block', 'beat', 'bar' or a time, got {self.at!r}")


@dataclass
class QueuedBlock:
    """A block in the ring that is not heard yet: where it starts there, and what makes it again."""

    block: int
    start: int  # the ring's frames_written before it
    stream: StreamSnapshot | None  # None: not to be made again (a live input plays)
    chain: tuple
    applied: list[Change]  # the changes applied at it, in order
    latency_ms: list[float]  # each applied change's control -> sound, as measured when it was made
    out: np.ndarray  # its device frames (for a recording, written once it can no longer change)


@dataclass
class EngineStats:
    blocks: int = 0
    faults: int = 0
    rewinds: int = 0  # times queued blocks were made again for a change
    last_error: str = ""
    block_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))
    # The most real time the inference thread lost against the audio it made since the ring was last full
    # (blocks slower than the audio they wrote, sleeps that overran, audio taken back by a rewind). An
    # underrun needs this to reach the headroom: it tells a machine too busy or too slow for the settings
    # from audio lost on the way out.
    behind_ms_max: float = 0.0


@dataclass(frozen=True)
class Playing:
    """The settings the next block is made with, once its changes are applied. The inference thread
    publishes a new one at every block boundary (one reference swap), so the control thread reads what
    is playing without touching the stream or the output chain."""

    params: StreamParams
    seed: int
    gain: float


def underruns_from_load(status: dict) -> bool:
    """Whether an `Engine.status()`'s underruns can be the machine's: the engine fell behind real time by most
    of its headroom (too busy, or settings too heavy for it). Underruns without that are audio lost between
    the ring and the device."""
    return status["behind_ms_max"] >= 0.75 * status["headroom_ms"]


class StatusReport(dict):
    """`status()`'s figures; prints as a small table in the REPL."""

    def __repr__(self) -> str:
        width = max(len(k) for k in self)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.items())
