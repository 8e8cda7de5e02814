"""MIDI control: CC knobs -> instrument parameters, notes -> prompt slots, program changes -> patches.

The mapping records here are plain, validated data (patch files store them as dicts); `MidiControl` below
applies them to a running `Instrument` from the asyncio loop.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

CURVES = ("lin", "exp", "log")

# Every patch-mapping parameter with the values it may take: (lo, hi, is_integer). A mapping's range
# must lie inside its parameter's domain, so a knob can never ask for a value the instrument refuses.
PARAM_DOMAINS: dict[str, tuple[float, float, bool]] = {
    "cfg": (0.0, 20.0, False),
    "cfg_pp": (0.0, 2.0, False),
    "steps": (1.0, 100.0, True),
    "gain": (0.0, 4.0, False),
    "seed": (0.0, 2.0**31 - 1, True),
    "bpm": (20.0, 400.0, False),
    "drop": (1.0, 4096.0, True),
    "weight": (0.0, 10.0, False),
}

# The range a freshly learned knob covers: the useful part of each domain, not all of it.
DEFAULT_RANGES: dict[str, tuple[float, float, str]] = {
    "cfg": (1.0, 7.0, "lin"),
    "cfg_pp": (0.0, 1.5, "lin"),
    "steps": (1.0, 16.0, "lin"),
    "gain": (0.0, 1.5, "lin"),
    "seed": (0.0, 127.0, "lin"),
    "bpm": (60.0, 180.0, "lin"),
    "drop": (1.0, 64.0, "lin"),
    "weight": (0.0, 1.0, "lin"),
}

WEIGHT_PREFIX = "weight:"


def param_kind(param: Any) -> str:
    """The domain key of a patch-mapping parameter name ("weight:<text>" -> "weight"); ValueError if unknown."""
    if not isinstance(param, str):
        raise ValueError(f"param must be a string, got {param!r}")
    if param.startswith(WEIGHT_PREFIX):
        if not param[len(WEIGHT_PREFIX) :]:
            raise ValueError("param 'weight:' needs a prompt text after the colon")
        return "weight"
    if param not in PARAM_DOMAINS or param == "weight":
        names = ", ".join([*(n for n in PARAM_DOMAINS if n != "weight"), "weight:<prompt text>"])
        raise ValueError(f"param {param!r} is unknown; use one of {names}")
    return param


def default_range(param: str) -> tuple[float, float, str]:
    """(lo, hi, curve) for a knob bound to `param` without an explicit range (used by `learn`)."""
    return DEFAULT_RANGES[param_kind(param)]


def _int_in(d: dict, key: str, lo: int, hi: int) -> int:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _finite(d: dict, key: str) -> float:
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{key} must be a finite number, got {v!r}")
    return float(v)


def _check_keys(d: Any, what: str, required: set[str], optional: set[str]) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"a {what} must be a dict, got {type(d).__name__}")
    missing = required - set(d)
    if missing:
        raise ValueError(f"{what} is missing key(s): {', '.join(sorted(missing))}")
    unknown = set(d) - required - optional
    if unknown:
        raise ValueError(f"{what} has unknown key(s): {', '.join(sorted(unknown))}")


def _build(cls: type, **values: Any) -> Any:
    """An instance from already checked values (skips __post_init__, which would check them again)."""
    m = object.__new__(cls)
    for k, v in values.items():
        object.__setattr__(m, k, v)
    return m


def _normalise(target: Any, checked: Any) -> None:
    for f in fields(target):
        object.__setattr__(target, f.name, getattr(checked, f.name))


@dataclass(frozen=True)
class CCMapping:
    """One knob: control change number `cc` sweeps `param` from `lo` (value 0) to `hi` (value 127).

    `curve`: "lin"; "exp" (equal ratios per step: natural for cfg, bpm, gain in dB-like feel); "log" (the
    mirror of exp: fast at first, fine near the top). `channel`: 0..15, or None for any channel.
    """

    cc: int
    param: str
    lo: float
    hi: float
    curve: str = "lin"  # lin | exp | log
    channel: int | None = None  # None = omni

    def __post_init__(self) -> None:
        _normalise(self, self.from_dict(asdict(self)))  # the same checks whichever way it is built

    @classmethod
    def from_dict(cls, d: dict) -> CCMapping:
        _check_keys(d, "CC mapping", {"cc", "param", "lo", "hi"}, {"curve", "channel"})
        cc = _int_in(d, "cc", 0, 127)
        channel = d.get("channel")
        if channel is not None:
            channel = _int_in(d, "channel", 0, 15)
        param = d["param"]
        kind = param_kind(param)
        lo, hi = _finite(d, "lo"), _finite(d, "hi")
        dlo, dhi, _ = PARAM_DOMAINS[kind]
        for key, v in (("lo", lo), ("hi", hi)):
            if not dlo <= v <= dhi:
                raise ValueError(f"{key} must lie in {param}'s range {dlo:g}..{dhi:g}, got {v:g}")
        if lo == hi:
            raise ValueError(f"lo and hi must differ (both {lo:g}): the knob would do nothing")
        curve = d.get("curve", "lin")
        if curve not in CURVES:
            raise ValueError(f"curve must be one of {', '.join(CURVES)}, got {curve!r}")
        if curve != "lin" and (lo <= 0 or hi <= 0):
            raise ValueError(f"curve {curve!r} needs lo and hi > 0, got lo={lo:g} hi={hi:g}")
        return _build(cls, cc=cc, param=param, lo=lo, hi=hi, curve=curve, channel=channel)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["channel"] is None:
            del d["channel"]
        return d

    @property
    def kind(self) -> str:
        return param_kind(self.param)

    def matches(self, cc: int, channel: int) -> bool:
        return cc == self.cc and (self.channel is None or channel == self.channel)

    def value(self, cc_value: int) -> float:
        """The parameter value for a controller position 0..127 (clamped); integers for steps/seed/drop."""
        x = min(max(float(cc_value), 0.0), 127.0) / 127.0
        lo, hi = self.lo, self.hi
        if self.curve == "exp":
            v = lo * (hi / lo) ** x
        elif self.curve == "log":
            v = lo + hi - lo * (hi / lo) ** (1.0 - x)
        else:
            v = lo + (hi - lo) * x
        v = min(max(v, min(lo, hi)), max(lo, hi))  # rounding noise never leaves the range
        if PARAM_DOMAINS[self.kind][2]:
            return int(round(v))
        return v


@dataclass(frozen=True)
class NoteMapping:
    """One key: note-on puts `prompt` into the blend at `weight`, note-off takes it out again."""

    note: int
    prompt: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        _normalise(self, self.from_dict(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> NoteMapping:
        _check_keys(d, "note mapping", {"note", "prompt"}, {"weight"})
        note = _int_in(d, "note", 0, 127)
        if not isinstance(d["prompt"], str):
            raise ValueError(f"prompt must be a string, got {d['prompt']!r}")
        weight = _finite(d, "weight") if "weight" in d else 1.0
        if not 0.0 < weight <= PARAM_DOMAINS["weight"][1]:
            raise ValueError(f"weight must be in (0, {PARAM_DOMAINS['weight'][1]:g}], got {weight:g}")
        return _build(cls, note=note, prompt=d["prompt"], weight=weight)

    def to_dict(self) -> dict:
        return asdict(self)


def program_map_from_dict(d: Any) -> dict[int, str]:
    """Program number (0..127) -> patch name. JSON keys arrive as strings, so "5" is accepted for 5."""
    if not isinstance(d, dict):
        raise ValueError(f"programs must be a dict of program number -> patch name, got {type(d).__name__}")
    out: dict[int, str] = {}
    for k, name in d.items():
        try:
            n = int(k) if not isinstance(k, bool) else -1
        except (TypeError, ValueError):
            n = -1
        if not 0 <= n <= 127 or (isinstance(k, float) and k != n):
            raise ValueError(f"programs: key {k!r} must be a program number in 0..127")
        if not isinstance(name, str) or not name:
            raise ValueError(f"programs[{k!r}] must be a patch name, got {name!r}")
        out[n] = name
    return out
