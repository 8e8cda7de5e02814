"""MIDI control: CC knobs -> instrument parameters, notes -> prompt slots, program changes -> patches.

The mapping records here are plain, validated data (patch files store them as dicts); `MidiControl` below
applies them to a running `Instrument` from the asyncio loop.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .clock import TickTempo

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


# --- the live MIDI input ---------------------------------------------------------------------------------

API_NAMES = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}
VIRTUAL_PORT = "midi_in"


class MidiUnavailable(RuntimeError):
    """No MIDI input could be opened (no such port, no ALSA sequencer, no JACK server...)."""


def choose_api(api: str | None = None) -> str:
    """The RtMidi API to use: the one asked for, else ALSA where its sequencer exists, else JACK on Linux.

    Machines without /dev/snd/seq (containers, some servers) still have MIDI through a JACK server."""
    import os

    import rtmidi

    ids = set(rtmidi.get_compiled_api())
    compiled = {name for name in API_NAMES.values() if getattr(rtmidi, f"API_{name}", None) in ids}
    if api is not None:
        if api not in API_NAMES:
            raise ValueError(f"MIDI api must be one of {', '.join(API_NAMES)}, got {api!r}")
        if API_NAMES[api] not in compiled:
            raise MidiUnavailable(f"this python-rtmidi was built without {api} support")
        return API_NAMES[api]
    if "LINUX_ALSA" in compiled and os.path.exists("/dev/snd/seq"):
        return "LINUX_ALSA"
    if sys.platform.startswith("linux") and "UNIX_JACK" in compiled:
        return "UNIX_JACK"
    for name in ("MACOSX_CORE", "WINDOWS_MM", "LINUX_ALSA", "UNIX_JACK"):
        if name in compiled:
            return name
    raise MidiUnavailable("this python-rtmidi was built without any MIDI api")


def _pick_port(wanted: str, names: list[str]) -> str:
    if wanted in names:
        return wanted
    hits = [n for n in names if wanted.lower() in n.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(repr(n) for n in names) or "none"
    if hits:
        raise MidiUnavailable(f"MIDI input {wanted!r} is ambiguous: it matches {', '.join(map(repr, hits))}")
    raise MidiUnavailable(f"no MIDI input named {wanted!r}; inputs here: {listing}")


class MidiControl:
    """Plays an `Instrument` from a MIDI input: knobs, keys, program changes, clock and transport.

    `port`: the name (or a unique part of it) of an input to open; None creates a virtual input
    `<client_name>:midi_in` that controllers and sequencers connect to. `api`: "alsa" | "jack" | ... to force
    one (see `choose_api`). `clock`: a `Clock` fed by MIDI clock messages (it decides whether the tempo is
    used). `patch_loader(name)`: called for a program change mapped to that patch name (`inst.load` fits:
    the patch's MIDI mappings it returns are installed). `at`: when note
    changes to the prompt blend are heard ("now", "beat", "bar", ...).

    RtMidi delivers messages on its own thread; each is stamped there and handed to the asyncio loop, where
    it is applied, so the instrument is only touched from the loop's thread. A message that cannot be
    applied becomes one line on `on_error` (and in `errors`), never an exception.
    """

    def __init__(
        self,
        inst: Any,
        *,
        port: str | None = None,
        client_name: str = "lmdm-live",
        api: str | None = None,
        clock: Any = None,
        patch_loader: Callable[[str], Any] | None = None,
        mappings: Iterable[CCMapping | dict] = (),
        notes: Iterable[NoteMapping | dict] = (),
        programs: dict | None = None,
        at: Any = "now",
        loop: asyncio.AbstractEventLoop | None = None,
        on_error: Callable[[str], None] | None = None,
        start: bool = True,
    ) -> None:
        if api is not None and api not in API_NAMES:
            raise ValueError(f"MIDI api must be one of {', '.join(API_NAMES)}, got {api!r}")
        if at not in ("now", "block", "beat", "bar"):
            raise ValueError(f"at must be 'now', 'block', 'beat' or 'bar', got {at!r}")
        self.inst = inst
        self.clock = clock
        self.patch_loader = patch_loader
        self.at = at
        self.port_name = port
        self.client_name = client_name
        self.api_request = api
        self.on_error = on_error or (lambda msg: print(f"lmdm-live midi: {msg}", file=sys.stderr))
        self.errors: deque[str] = deque(maxlen=100)
        self.received: Counter[str] = Counter()
        self.transport: deque[tuple[str, float]] = deque(maxlen=64)  # (start|stop|continue, time)
        self.playing: bool | None = None  # unknown until a start/stop/continue arrives
        self.tempo = TickTempo()
        self._ticks: int | None = None  # clock ticks since the last start (None: position unknown)
        self._cc: list[CCMapping] = []
        self._notes: dict[int, NoteMapping] = {}
        self._programs: dict[int, str] = {}
        self._held: dict[int, tuple[str, float | None]] = {}  # note -> (prompt, weight it replaced)
        self._learning: tuple[CCMapping, asyncio.Future | None] | None = None
        self._last_error: tuple[str, float] = ("", 0.0)
        self._loop = loop
        self._port = None
        self.api: str | None = None
        self.load({"cc": list(mappings), "notes": list(notes), "programs": programs or {}})
        if start:
            self.open()

    # --- the port ------------------------------------------------------------------------------------------

    def open(self) -> MidiControl:
        """Open the input (virtual, or the named port) and start handing its messages to the loop."""
        import mido

        if self._port is not None:
            return self
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                raise MidiUnavailable(
                    "MidiControl needs the asyncio loop that owns the instrument: create it inside that "
                    "loop or pass loop="
                ) from None
        self.api = choose_api(self.api_request)
        try:
            backend = mido.Backend(f"mido.backends.rtmidi/{self.api}", load=True)
            if self.port_name is None:
                self._port = backend.open_input(
                    VIRTUAL_PORT, client_name=self._free_client_name(), callback=self._from_rtmidi
                )
            else:
                name = _pick_port(self.port_name, backend.get_input_names())
                self._port = backend.open_input(name, callback=self._from_rtmidi)
        except MidiUnavailable:
            raise
        except (OSError, SystemError, RuntimeError) as e:
            hint = " (is a JACK server running?)" if self.api == "UNIX_JACK" else ""
            raise MidiUnavailable(f"cannot open a MIDI input over {self.api}{hint}: {e}") from None
        return self

    @property
    def port(self) -> str | None:
        """The opened port's name (for a virtual port, what other clients connect to)."""
        if self._port is None:
            return None
        return f"{self.client_name}:{self._port.name}" if self.port_name is None else self._port.name

    def _free_client_name(self) -> str:
        """JACK renames a client whose name is taken (a second instrument on the machine), which would
        leave `port` naming the other one's input; so pick a free name first and say which."""
        if self.api != "UNIX_JACK":
            return self.client_name
        try:
            import jack

            probe = jack.Client("lmdm-live-probe", no_start_server=True)
        except Exception:
            return self.client_name  # opening the port will say what is wrong with JACK
        try:
            taken = {p.name.split(":", 1)[0] for p in probe.get_ports()}
        finally:
            probe.close()
        base, n = self.client_name, 2
        while self.client_name in taken:
            self.client_name = f"{base}-{n}"
            n += 1
        return self.client_name

    def close(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None
        if self._learning is not None and self._learning[1] is not None:
            self._learning[1].cancel()
        self._learning = None

    def __enter__(self) -> MidiControl:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _from_rtmidi(self, msg: Any) -> None:
        """RtMidi's thread: stamp the message and queue it on the loop. Nothing here may raise."""
        t = time.monotonic()
        try:
            self._loop.call_soon_threadsafe(self.handle, msg, t)
        except Exception:  # the loop is closing: the message has nowhere to go
            pass

    # --- mappings ------------------------------------------------------------------------------------------

    @property
    def mappings(self) -> list[CCMapping]:
        return list(self._cc)

    @property
    def notes(self) -> dict[int, NoteMapping]:
        return dict(self._notes)

    @property
    def programs(self) -> dict[int, str]:
        return dict(self._programs)

    def add(self, mapping: CCMapping | dict) -> CCMapping:
        """Add a CC mapping (a bad one raises ValueError and changes nothing). One that has the same cc,
        channel and param as an existing one replaces it; a knob may drive several params."""
        m = mapping if isinstance(mapping, CCMapping) else CCMapping.from_dict(mapping)
        self._cc = [o for o in self._cc if (o.cc, o.channel, o.param) != (m.cc, m.channel, m.param)] + [m]
        return m

    def map(
        self,
        cc: int,
        param: str,
        lo: float | None = None,
        hi: float | None = None,
        curve: str | None = None,
        channel: int | None = None,
    ) -> CCMapping:
        """`midi.map(74, "cfg", 1, 7, "exp")`; range and curve default to the param's usual ones."""
        return self.add(_with_defaults(cc, param, lo, hi, curve, channel))

    def unmap(self, cc: int | None = None, param: str | None = None) -> int:
        """Remove the CC mappings of knob `cc` and/or to `param`; returns how many went."""
        keep = [
            m for m in self._cc if not ((cc is None or m.cc == cc) and (param is None or m.param == param))
        ]
        removed, self._cc = len(self._cc) - len(keep), keep
        return removed

    def map_note(self, note: int, prompt: str, weight: float = 1.0) -> NoteMapping:
        m = NoteMapping(note, prompt, weight)
        self._notes[m.note] = m
        return m

    def map_program(self, program: int, patch: str) -> None:
        self._programs.update(program_map_from_dict({program: patch}))

    def to_dict(self) -> dict:
        """Every mapping as plain data (what a patch file stores)."""
        return {
            "cc": [m.to_dict() for m in self._cc],
            "notes": [m.to_dict() for m in self._notes.values()],
            "programs": {str(k): v for k, v in self._programs.items()},
        }

    def load(self, d: dict, replace: bool = True) -> None:
        """Take mappings from `to_dict()`-shaped data. All are checked first: one bad entry raises
        ValueError naming it, and the mappings in use stay as they were. With `replace`, each kind given
        (cc, notes, programs) replaces that kind; kinds left out stay as they are."""
        if not isinstance(d, dict):
            raise ValueError(f"MIDI mappings must be a dict with cc/notes/programs, got {type(d).__name__}")
        unknown = set(d) - {"cc", "notes", "programs"}
        if unknown:
            raise ValueError(f"MIDI mappings have unknown key(s): {', '.join(sorted(unknown))}")
        cc = _checked_list(d.get("cc", []), "cc", CCMapping)
        notes = _checked_list(d.get("notes", []), "notes", NoteMapping)
        programs = program_map_from_dict(d.get("programs", {}))
        if replace and "cc" in d:
            self._cc = []
        if replace and "notes" in d:
            self._notes = {}
        if replace and "programs" in d:
            self._programs = {}
        for m in cc:
            self.add(m)
        self._notes.update({m.note: m for m in notes})
        self._programs.update(programs)

    def install(self, controls: Any) -> None:
        """Take the MIDI part of a loaded patch (anything with `cc`, `notes`, `programs`, as `apply_patch`
        returns): each kind the patch defines replaces the one in use; a patch without MIDI changes nothing."""
        d: dict[str, Any] = {}
        if getattr(controls, "cc", ()):
            d["cc"] = list(controls.cc)
        if getattr(controls, "notes", ()):
            d["notes"] = list(controls.notes)
        if getattr(controls, "programs", None):
            d["programs"] = {k: str(v) for k, v in dict(controls.programs).items()}
        self.load(d)

    def learn(
        self, param: str, lo: float | None = None, hi: float | None = None, curve: str | None = None
    ) -> asyncio.Future | None:
        """Bind the next CC that moves to `param` (on that CC's channel). A bad param or range raises now.

        Returns a future that resolves to the new `CCMapping` (await it in a script, or just move a knob)."""
        template = _with_defaults(0, param, lo, hi, curve, None)
        if self._learning is not None and self._learning[1] is not None:
            self._learning[1].cancel()
        fut = self._loop.create_future() if self._loop is not None else None
        self._learning = (template, fut)
        return fut

    def cancel_learn(self) -> None:
        if self._learning is not None and self._learning[1] is not None:
            self._learning[1].cancel()
        self._learning = None

    @property
    def learning(self) -> str | None:
        """The param waiting for a knob, if any."""
        return self._learning[0].param if self._learning else None

    # --- applying messages (on the loop) -------------------------------------------------------------------

    def handle(self, msg: Any, t: float | None = None) -> None:
        """Apply one mido message that arrived at `t` (time.monotonic()). Never raises."""
        t = time.monotonic() if t is None else t
        kind = getattr(msg, "type", "?")
        self.received[kind] += 1
        try:
            if kind == "control_change":
                self._control(msg.channel, msg.control, msg.value)
            elif kind == "note_on" and msg.velocity > 0:
                self._sketch_note(msg.note, msg.velocity)
                self._note_on(msg.note)
            elif kind in ("note_on", "note_off"):
                self._sketch_note(msg.note, 0)
                self._note_off(msg.note)
            elif kind == "program_change":
                self._program(msg.program)
            elif kind == "clock":
                self._tick(t)
            elif kind in ("start", "stop", "continue"):
                self._transport(kind, t)
            elif kind == "songpos":
                self._ticks = msg.pos * 6 - 1  # a MIDI beat (16th note) is 6 ticks; the next tick lands on it
        except ValueError as e:
            self._error(str(e))
        except Exception as e:  # a bug or a misbehaving patch loader must not kill the MIDI input
            self._error(f"{kind}: {type(e).__name__}: {e}")

    def _control(self, channel: int, cc: int, value: int) -> None:
        if self._learning is not None:
            template, fut = self._learning
            self._learning = None
            m = self.add(replace(template, cc=cc, channel=channel))
            if fut is not None and not fut.done():
                fut.set_result(m)
            return
        for m in [m for m in self._cc if m.matches(cc, channel)]:
            try:
                self._apply(m, m.value(value), value)
            except ValueError as e:
                self._error(f"cc {cc} -> {m.param}: {e}")

    def _apply(self, m: CCMapping, v: float, raw: int) -> None:
        inst, kind = self.inst, m.kind
        if kind == "weight":
            text = m.param[len(WEIGHT_PREFIX) :]
            blend = dict(inst.prompts())
            blend[text] = v
            inst.prompts(blend)
        elif kind == "bpm":
            if self.clock is not None:
                self.clock.internal(v)
            else:
                inst.bpm(v)
        elif kind == "drop":
            if raw > 0:  # a button's release (value 0) drops nothing
                inst.drop_context(v)
        else:
            getattr(inst, kind)(v)

    def _sketch_note(self, note: int, velocity: int) -> None:
        """With `inst.sketch_notes()` on, every key also plays the sketch's pitch (velocity: its loudness)."""
        if getattr(self.inst, "notes_drive_sketch", False):
            self.inst.sketch_note(note, velocity)

    def _note_on(self, note: int) -> None:
        m = self._notes.get(note)
        if m is None:
            return
        blend = dict(self.inst.prompts())
        previous = self._held[note][1] if note in self._held else blend.get(m.prompt)
        blend[m.prompt] = m.weight
        self.inst.prompts(blend, at=self.at)
        self._held[note] = (m.prompt, previous)

    def _note_off(self, note: int) -> None:
        if note not in self._held:
            return
        prompt, previous = self._held.pop(note)
        if any(p == prompt for p, _ in self._held.values()):
            return  # another held key still sounds this prompt
        blend = dict(self.inst.prompts())
        if previous is None:
            blend.pop(prompt, None)
        else:
            blend[prompt] = previous
        if not blend or sum(blend.values()) <= 0:
            blend = {"": 1.0}  # the empty prompt: nothing asked for
        self.inst.prompts(blend, at=self.at)

    def _program(self, program: int) -> None:
        name = self._programs.get(program)
        if name is None:
            raise ValueError(f"program {program} is not mapped to a patch")
        if self.patch_loader is None:
            raise ValueError(f"program {program} -> {name!r}: no patch loader was given")
        try:
            controls = self.patch_loader(name)
        except Exception as e:
            raise ValueError(f"program {program} -> patch {name!r}: {e}") from None
        if all(hasattr(controls, k) for k in ("cc", "notes", "programs")):
            self.install(controls)  # the patch's own knobs and keys come with it (e.g. from `inst.load`)

    def _tick(self, t: float) -> None:
        if self._ticks is not None:
            self._ticks += 1
        bpm = self.tempo.tick(t)
        if bpm is not None and self.clock is not None:
            beat = self._ticks / self.tempo.ppqn if self._ticks is not None and self.playing else None
            self.clock.midi(bpm, beat, t)

    def _transport(self, kind: str, t: float) -> None:
        self.transport.append((kind, t))
        if kind == "start":
            self._ticks = -1  # the first tick after a start is beat 0
            self.playing = True
        elif kind == "continue":
            self.playing = True
        else:
            self.playing = False

    @property
    def bpm(self) -> float | None:
        """The tempo of the incoming MIDI clock (None before a beat of ticks has arrived)."""
        return self.tempo.bpm

    def _error(self, msg: str) -> None:
        self.errors.append(msg)
        now = time.monotonic()
        if msg == self._last_error[0] and now - self._last_error[1] < 1.0:
            return  # a knob sweeping through a bad range says so once, not per message
        self._last_error = (msg, now)
        self.on_error(msg)

    def status(self) -> dict:
        return {
            "port": self.port,
            "api": self.api,
            "cc_mappings": len(self._cc),
            "notes": len(self._notes),
            "programs": len(self._programs),
            "midi_bpm": None if self.bpm is None else round(self.bpm, 2),
            "playing": self.playing,
            "learning": self.learning,
            "received": dict(self.received),
            "errors": len(self.errors),
        }


def _with_defaults(cc, param, lo, hi, curve, channel) -> CCMapping:
    dlo, dhi, dcurve = default_range(param)
    d = {"cc": cc, "param": param, "lo": dlo if lo is None else lo, "hi": dhi if hi is None else hi}
    d["curve"] = curve if curve is not None else (dcurve if lo is None and hi is None else "lin")
    if channel is not None:
        d["channel"] = channel
    return CCMapping.from_dict(d)


def _checked_list(items: Any, key: str, cls: type) -> list:
    if not isinstance(items, list | tuple):
        raise ValueError(f"{key} must be a list, got {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(item if isinstance(item, cls) else cls.from_dict(item))
        except ValueError as e:
            raise ValueError(f"{key}[{i}]: {e}") from None
    return out
