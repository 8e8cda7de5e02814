"""MIDI control: CC knobs -> instrument parameters, notes -> prompt slots, program changes -> patches.

The mapping records are plain, validated data (live/mappings.py; patch files store them as dicts);
`MidiControl` applies them to a running `Instrument` from the asyncio loop.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..live.mappings import CCMapping, NoteMapping, checked_list, program_map_from_dict, with_defaults
from ..live.params import apply_param
from .clock import TickTempo

if TYPE_CHECKING:
    from ..live.instrument import Instrument
    from ..live.patch import PatchControls


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
        inst: Instrument,
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
        return self.add(with_defaults(cc, param, lo, hi, curve, channel))

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
        cc = checked_list(d.get("cc", []), "cc", CCMapping)
        notes = checked_list(d.get("notes", []), "notes", NoteMapping)
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

    def install(self, controls: PatchControls) -> None:
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
        template = with_defaults(0, param, lo, hi, curve, None)
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
        kind = m.kind
        if kind == "bpm" and self.clock is not None:
            self.clock.internal(v)  # the clock owns the tempo while it runs
        elif kind == "drop" and raw == 0:
            return  # a button's release (value 0) drops nothing
        else:
            apply_param(self.inst, m.param, v)

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
