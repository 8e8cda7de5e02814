"""The `/lmdm/...` address space: each address's arguments and usage, the checks its arguments pass, and
the replies. Ranges come from the parameter table (live/params.py), so the usage strings cannot drift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..live.params import PARAM_DOMAINS, PARAMS, Playable, apply_param, param_kind
from .osc_wire import MAX_TEXT, MidiBytes, Rgba, Timetag, clip

if TYPE_CHECKING:
    from ..live.instrument import Instrument

MAX_PROMPTS = 16  # prompts in one blend
SAMPLERS = ("euler", "pingpong")


class Bad(ValueError):
    """A decoded message that cannot be applied; the text is the reason sent back."""


# --- argument checks ----------------------------------------------------------------------------------------


def type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "a true/false"
    names = {int: "an int", float: "a float", str: "a string", bytes: "a blob", list: "an array"}
    names |= {Rgba: "an RGBA colour", MidiBytes: "a MIDI message", Timetag: "a timetag"}
    if v is None:
        return "a nil"
    return names.get(type(v), "a " + type(v).__name__)


def check_number(v: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Bad(f"{what} must be a number, got {type_name(v)}")
    x = float(v)
    if not math.isfinite(x) or not lo <= x <= hi:
        raise Bad(f"{what} must be in {lo:g}..{hi:g}, got {x:g}")
    return x


def check_integer(v: Any, what: str, lo: int, hi: int) -> int:
    """An int, or a float with an integral value (SuperCollider and many controllers send only floats)."""
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        got = f"{v:g}" if isinstance(v, float) else type_name(v)
        raise Bad(f"{what} must be an integer, got {got}")
    if not lo <= v <= hi:
        raise Bad(f"{what} must be in {lo}..{hi}, got {v}")
    return v


def param_arg(v: Any, name: str) -> Any:
    """An argument for parameter `name`, checked against its domain in the parameter table."""
    p = PARAMS[name]
    if p.integer:
        return check_integer(v, name, int(p.lo), int(p.hi))
    return check_number(v, name, p.lo, p.hi)


def check_text(v: Any, what: str, max_len: int = MAX_TEXT) -> str:
    if not isinstance(v, str):
        raise Bad(f"{what} must be a string, got {type_name(v)}")
    if len(v) > max_len:
        raise Bad(f"{what} is {len(v)} characters long (at most {max_len})")
    return v


def plain(e: BaseException) -> str:
    """An exception's first line, in the user's terms: never the name of a Python class."""
    text = str(e).strip().splitlines()
    return text[0] if text else "it could not be applied (nothing changed)"


@dataclass(frozen=True)
class Route:
    """An address: its handler (an OSCControl method), how many arguments, and whether it takes @beat etc."""

    method: str
    lo: int
    hi: int
    usage: str
    timed: bool = True
    pairs: bool = False  # key/value pairs: a trailing "@..." is a quantiser only after the last pair


ROUTES: dict[str, Route] = {
    "/lmdm/prompt": Route("_prompt", 1, 1, "s:text"),
    "/lmdm/prompts": Route("_prompts", 2, 2 * MAX_PROMPTS, "s:text f:weight [s f ...]", pairs=True),
    "/lmdm/cfg": Route("_cfg", 1, 1, PARAMS["cfg"].usage()),
    "/lmdm/cfg_pp": Route("_cfg_pp", 1, 1, PARAMS["cfg_pp"].usage() + ' | s:"off"'),
    "/lmdm/tempo_guidance": Route("_tempo_guidance", 1, 1, PARAMS["tempo_guidance"].usage()),
    "/lmdm/sketch_guidance": Route("_sketch_guidance", 1, 1, PARAMS["sketch_guidance"].usage()),
    "/lmdm/steps": Route("_steps", 1, 1, PARAMS["steps"].usage()),
    "/lmdm/sampler": Route("_sampler", 1, 1, 's:"euler"|"pingpong"'),
    "/lmdm/seed": Route("_seed", 1, 1, "i:seed"),
    "/lmdm/drop": Route("_drop", 0, 1, "[i:frames]"),
    "/lmdm/gain": Route("_gain", 1, 1, PARAMS["gain"].usage()),
    "/lmdm/mute": Route("_mute", 0, 0, "no arguments"),
    "/lmdm/unmute": Route("_unmute", 0, 0, "no arguments"),
    "/lmdm/hush": Route("_hush", 0, 0, "no arguments", timed=False),
    "/lmdm/reset": Route("_reset", 0, 0, "no arguments"),
    "/lmdm/bpm": Route("_bpm", 1, 1, PARAMS["bpm"].usage(), timed=False),
    "/lmdm/patch": Route("_patch", 1, 1, "s:name or path", timed=False),
    "/lmdm/record": Route("_record", 1, 1, "s:path.wav", timed=False),
    "/lmdm/record/stop": Route("_record_stop", 0, 0, "no arguments", timed=False),
    "/lmdm/status": Route("_status", 0, 0, "no arguments", timed=False),
    "/lmdm/play": Route("_play", 0, 2 * 64, "s:key value [s:key value ...]", pairs=True),
    "/lmdm/sketch": Route("_sketch", 1, 3, "s:source [f:strength 0..2] [i:filter odd 1..31]", timed=False),
    "/lmdm/sketch/off": Route("_sketch_off", 0, 0, "no arguments", timed=False),
    "/lmdm/sketch/notes": Route("_sketch_notes", 1, 1, "i:on 0|1", timed=False),
    "/lmdm/sketch/note": Route("_sketch_note", 2, 2, "i:note 0..127 i:velocity 0..127", timed=False),
    "/lmdm/jam": Route("_jam", 1, 3, "s:source [i:t_f frames] [f:mix 0..1]", timed=False),
    "/lmdm/jam/off": Route("_jam_off", 0, 0, "no arguments", timed=False),
    "/lmdm/delay": Route("_delay", 1, 2, "s:source [i:blocks 1..64]", timed=False),
    "/lmdm/delay/off": Route("_delay_off", 0, 0, "no arguments", timed=False),
    # another instrument's reply: consumed without an answer, so two servers never bounce errors forever
    "/lmdm/error": Route("_ignore", 0, 0, "", timed=False),
    "/lmdm/notice": Route("_ignore", 0, 0, "", timed=False),
}
ALIAS_ROUTE = Route("_alias", 1, 64, "f:value")


@dataclass
class Call:
    """A message ready for its handler: arguments without the quantiser, and when it should be heard."""

    address: str
    args: tuple
    at: str | float
    sender: tuple


def is_quantiser(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("@")


def source_arg(v: Any) -> str:
    text = check_text(v, "source")
    if not text.strip():
        raise Bad('source must name an input: "jack", "jack:PORT", "sd", "sd:DEVICE" or a sound file')
    return text


def lambda_arg(v: Any) -> float | str:
    if v == "off":
        return "off"
    if isinstance(v, str):
        raise Bad(f"cfg_pp must be a number in 0..2 or 'off', got {clip(v, 40)!r}")
    return param_arg(v, "cfg_pp")


def sampler_arg(v: Any) -> str:
    name = check_text(v, "sampler")
    if name not in SAMPLERS:
        raise Bad(f"sampler must be 'euler' or 'pingpong', got {clip(name, 40)!r}")
    return name


def cps_to_bpm(cps: float) -> float:
    """Tidal's cycles per second as bpm (4 beats a cycle), folded by octaves into the instrument's 20..400."""
    bpm = cps * 60 * 4
    while bpm > 400.0:
        bpm /= 2
    while bpm < 20.0:
        bpm *= 2
    return bpm


def set_param(inst: Playable, param: str, value: Any, at: str | float = "now") -> None:
    """Set one mapping parameter ("cfg", ..., "weight:<prompt text>") from a number sent by a client."""
    lo, hi, _ = PARAM_DOMAINS[param_kind(param)]
    apply_param(inst, param, check_number(value, param, lo, hi), at)


def int_arg(v: int) -> tuple[str, int]:
    return ("i", v) if -(2**31) <= v < 2**31 else ("h", v)


def status_pairs(inst: Instrument) -> list[tuple[str, Any]]:
    """The /lmdm/status reply: key/value pairs of the instrument's figures."""
    st, lat = inst.status(), inst.latency()
    cfg_pp = st.get("cfg_pp")

    def f(x: Any) -> tuple[str, float]:
        return ("f", float(x) if x is not None else 0.0)

    pairs = [
        ("prompt", ("s", clip(str(st.get("prompt") or ""), MAX_TEXT))),
        ("cfg", f(st.get("cfg"))),
        ("cfg_pp", ("s", "off") if cfg_pp is None else f(cfg_pp)),
        ("tempo_guidance", f(st.get("tempo_guidance"))),
        ("steps", int_arg(int(st.get("steps") or 0))),
        ("sampler", ("s", str(st.get("sampler") or ""))),
        ("seed", int_arg(int(st.get("seed") or 0))),
        ("gain", f(st.get("gain"))),
        ("bpm", f(st.get("bpm"))),
        ("x_realtime", f(st.get("x_realtime"))),
        ("underruns", int_arg(int(st.get("underruns") or 0))),
        ("faults", int_arg(int(st.get("faults") or 0))),
        ("latency_ms", f(lat.get("total_ms"))),
        ("ring_ms", f(st.get("ring_ms"))),
        ("blocks", int_arg(int(st.get("blocks") or 0))),
        # the most the engine fell behind real time: near the headroom, underruns were a busy machine
        ("behind_ms_max", f(st.get("behind_ms_max"))),
    ]
    out: list[tuple[str, Any]] = []
    for key, typed in pairs:
        out += [("s", key), typed]
    return out
