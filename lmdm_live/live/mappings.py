"""MIDI and OSC mappings as plain, validated data: which knob sweeps which parameter, which key adds which
prompt, which program loads which patch, which OSC address sets which parameter.

Patch files store them as dicts; the MIDI port and the OSC server apply them. Ranges are checked against
the domains in `params`, so a mapping can never ask for a value the instrument refuses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from .params import CURVES, PARAM_DOMAINS, default_range, param_kind

OSC_NAMESPACE = "/lmdm/"  # the instrument's own addresses: an alias may not take one over


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


def check_aliases(aliases: Mapping[str, str]) -> dict[str, str]:
    """Validated {address: parameter}; ValueError naming the bad entry."""
    if not isinstance(aliases, Mapping):
        raise ValueError(
            f"aliases must be a mapping of OSC address to parameter, got {type(aliases).__name__}"
        )
    out = {}
    for address, param in aliases.items():
        if (
            not isinstance(address, str)
            or not address.startswith("/")
            or any(c in address for c in " #*,?[]{}")
        ):
            raise ValueError(f"alias address must look like /knob/1, got {address!r}")
        if address.startswith(OSC_NAMESPACE):
            raise ValueError(f"alias {address} would take over one of the instrument's own addresses")
        try:
            param_kind(param)
        except ValueError as e:
            raise ValueError(f"alias {address}: {e}") from None
        out[address] = param
    return out


def with_defaults(cc, param, lo, hi, curve, channel) -> CCMapping:
    dlo, dhi, dcurve = default_range(param)
    d = {"cc": cc, "param": param, "lo": dlo if lo is None else lo, "hi": dhi if hi is None else hi}
    d["curve"] = curve if curve is not None else (dcurve if lo is None and hi is None else "lin")
    if channel is not None:
        d["channel"] = channel
    return CCMapping.from_dict(d)


def checked_list(items: Any, key: str, cls: type) -> list:
    if not isinstance(items, list | tuple):
        raise ValueError(f"{key} must be a list, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(item if isinstance(item, cls) else cls.from_dict(item))
        except ValueError as e:
            raise ValueError(f"{key}[{i}]: {e}") from None
    return out
