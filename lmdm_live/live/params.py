"""The instrument's parameter vocabulary, declared once.

Every parameter a knob, an OSC alias, a patch or a line of Python can set is a row of `PARAMS`: its type,
the values it may take, its unit, the curve and range a freshly learned knob sweeps, and whether a change
can wait for a block, beat or bar (`at=`). The Instrument's checks, the OSC usage strings, the MIDI and
patch validators and the parameter table in docs/osc.md all read this table, so a range is changed here
or nowhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

CURVES = ("lin", "exp", "log")
QUANTISE = ("now", "block", "beat", "bar")
WEIGHT_PREFIX = "weight:"


@dataclass(frozen=True)
class Param:
    """One settable parameter. `lo`..`hi` is its whole domain; `knob` the part a learned knob covers."""

    name: str
    arg: str  # the argument's name in a usage line ("f:scale 0..20")
    integer: bool
    lo: float
    hi: float
    unit: str
    knob: tuple[float, float, str]  # (lo, hi, curve) for a knob bound without an explicit range
    timed: bool  # takes at= ("now", "block", "beat", "bar" or an instant)
    doc: str

    @property
    def domain(self) -> tuple[float, float, bool]:
        return (self.lo, self.hi, self.integer)

    def usage(self) -> str:
        """The OSC usage string: type tag, name and range ("f:cfg 0..20")."""
        tag = "i" if self.integer else "f"
        return f"{tag}:{self.arg} {self.lo:g}..{self.hi:g}"


# fmt: off
PARAMS: dict[str, Param] = {p.name: p for p in (
    #     name      arg       integer lo    hi            unit      knob                  timed  doc
    Param("cfg",    "scale",  False,  0.0,  20.0,         "scale",  (1.0, 7.0, "lin"),    True,  "classifier-free guidance (1 = off)"),
    Param("cfg_pp", "lambda", False,  0.0,  2.0,          "lambda", (0.0, 1.5, "lin"),    True,  "CFG++ lambda (or 'off')"),
    Param("tempo_guidance", "w", False, 0.0, 50.0,       "w",      (0.0, 20.0, "lin"),   True,  "guidance on the tempo channels (0 = off)"),
    Param("sketch_guidance", "w", False, 0.0, 50.0,      "w",      (0.0, 20.0, "lin"),   True,  "guidance on a hummed sketch while one plays (0 = off)"),
    Param("steps",  "steps",  True,   1.0,  100.0,        "steps",  (1.0, 16.0, "lin"),   True,  "denoising steps per block"),
    Param("gain",   "gain",   False,  0.0,  4.0,          "x",      (0.0, 1.5, "lin"),    True,  "output gain, ramped over one block"),
    Param("seed",   "seed",   True,   0.0,  2.0**31 - 1,  "",       (0.0, 127.0, "lin"),  True,  "noise seed"),
    Param("bpm",    "bpm",    False,  20.0, 400.0,        "bpm",    (60.0, 180.0, "lin"), False, "tempo of the beat/bar grid"),
    Param("drop",   "frames", True,   1.0,  4096.0,       "frames", (1.0, 64.0, "lin"),   True,  "forget the oldest context"),
    Param("weight", "weight", False,  0.0,  10.0,         "",       (0.0, 1.0, "lin"),    True,  "weight:<prompt> in the blend"),
)}
# fmt: on

# (lo, hi, is_integer) per parameter: a mapping's range must lie inside its domain, so a knob can never ask
# for a value the instrument refuses
PARAM_DOMAINS: dict[str, tuple[float, float, bool]] = {n: p.domain for n, p in PARAMS.items()}
DEFAULT_RANGES: dict[str, tuple[float, float, str]] = {n: p.knob for n, p in PARAMS.items()}


def param_kind(param: Any) -> str:
    """The domain key of a parameter name ("weight:<text>" -> "weight"); ValueError if unknown."""
    if not isinstance(param, str):
        raise ValueError(f"param must be a string, got {param!r}")
    if param.startswith(WEIGHT_PREFIX):
        if not param[len(WEIGHT_PREFIX) :]:
            raise ValueError("param 'weight:' needs a prompt text after the colon")
        return "weight"
    if param not in PARAMS or param == "weight":
        names = ", ".join([*(n for n in PARAMS if n != "weight"), "weight:<prompt text>"])
        raise ValueError(f"param {param!r} is unknown; use one of {names}")
    return param


def default_range(param: str) -> tuple[float, float, str]:
    """(lo, hi, curve) for a knob bound to `param` without an explicit range (used by `learn`)."""
    return DEFAULT_RANGES[param_kind(param)]


def check_at(at: Any) -> str | float:
    """A valid `at=`: a quantiser name or a finite time.monotonic() instant."""
    if isinstance(at, str):
        if at not in QUANTISE:
            raise ValueError(
                f"at must be 'now', 'block', 'beat', 'bar' or a time.monotonic() instant, got {at!r}"
            )
        return at
    if isinstance(at, int | float) and math.isfinite(at):
        return float(at)
    raise ValueError(f"at must be 'now', 'block', 'beat', 'bar' or a time.monotonic() instant, got {at!r}")


def is_number(x: Any) -> bool:
    """A real number, not a bool."""
    return isinstance(x, int | float) and not isinstance(x, bool)


def check_number(value: Any, what: str, lo: float, hi: float) -> float:
    """A finite number in lo..hi (not a bool); ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number in {lo:g}..{hi:g}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be in {lo:g}..{hi:g}, got {value:g}")
    return float(value)


def check_integer(value: Any, what: str, lo: int, hi: int) -> int:
    """An integer in lo..hi; a float with an integral value counts (controllers send floats)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def in_domain(name: str, value: float) -> float:
    """`value` as a float inside `name`'s domain; ValueError saying the range otherwise."""
    p = PARAMS[name]
    value = float(value)
    if not math.isfinite(value) or not p.lo <= value <= p.hi:
        raise ValueError(f"{name} must be in {p.lo:g}..{p.hi:g}, got {value}")
    return value


class Playable(Protocol):
    """What `apply_param` plays: the Instrument's setters."""

    def prompts(
        self, weights: dict[str, float] | None = None, at: Any = "now"
    ) -> dict[str, float] | None: ...

    def bpm(self, value: float | None = None) -> float | None: ...

    def drop_context(self, frames: int | None = None, at: Any = "now") -> None: ...


def apply_param(inst: Playable, param: str, value: float, at: str | float = "now") -> None:
    """Set one parameter ("cfg", ..., "weight:<prompt text>") from a number already in its domain.

    The one place a knob, an OSC alias and a patch's mapping turn a number into an instrument call."""
    kind = param_kind(param)
    if PARAMS[kind].integer:
        value = int(round(value))  # knobs and faders send floats
    if kind == "weight":
        blend = dict(inst.prompts() or {})
        blend[param[len(WEIGHT_PREFIX) :]] = value
        inst.prompts(blend, at=at)
    elif kind == "bpm":
        inst.bpm(value)
    elif kind == "drop":
        inst.drop_context(int(value), at=at)
    else:
        getattr(inst, kind)(value, at=at)


def doc_table() -> str:
    """The parameter table of docs/osc.md, made from `PARAMS` (tests check the committed doc equals it)."""
    rows = [
        "| parameter | type | range | unit | knob default | at= |",
        "|---|---|---|---|---|---|",
    ]
    for p in PARAMS.values():
        name = "weight:<prompt>" if p.name == "weight" else p.name
        lo, hi, curve = p.knob
        kind = "int" if p.integer else "float"
        timed = "yes" if p.timed else "no"
        lo_hi = f"{int(p.lo)}..{int(p.hi)}" if p.integer else f"{p.lo:g}..{p.hi:g}"
        rows.append(f"| `{name}` | {kind} | {lo_hi} | {p.unit or '—'} | {lo:g}..{hi:g} {curve} | {timed} |")
    return "\n".join(rows) + "\n"
