"""Patches: a sound and its controls in one TOML file, checked whole before anything changes.

A patch is what a performer loads between pieces: prompts, sampler settings, gain and tempo, plus the MIDI
and OSC mappings that make a controller play it. Loading validates the whole file first (every problem is
reported in one line naming the file and the line or key), so a typo never half-applies a patch on stage.

Schema (every table and key is optional, except that [prompts] must not be empty when present):

    name = "acid"                         # default: the file's stem
    description = "squelchy 303 lines"
    model = "small"                       # a preset name or a checkpoint path (relative to the patch file);
                                          # a patch for another model than the one playing is refused
    [prompts]                             # text = weight (>= 0, not all 0); the blend replaces the current one
    "acid house, 303 bassline, 126 bpm" = 1.0
    "warehouse reverb" = 0.3
    [sampler]
    sampler = "pingpong"                  # or "euler"
    steps = 8                             # 1..100
    cfg = 1.0                             # 0..20 (1 = no guidance); setting it turns CFG++ off
    cfg_pp = 0.95                         # 0..2, or "off"
    [play]
    gain = 0.9                            # 0..4
    bpm = 126                             # 20..400: the beat/bar grid changes quantise to
    seed = 7                              # an integer
    eject_frames = 8                      # context frames dropped when the main prompt changes (>= 0)
    [[midi.cc]]                           # a knob: cc 0..127 sweeps param from lo to hi
    cc = 74
    param = "cfg"                         # cfg, cfg_pp, steps, gain, seed, bpm, drop or "weight:<prompt>"
    lo = 1.0
    hi = 6.0
    curve = "exp"                         # lin | exp | log
    channel = 0                           # 0..15; leave out for any channel
    [[midi.notes]]                        # a key: note-on adds the prompt to the blend, note-off removes it
    note = 36
    prompt = "kick drum"
    weight = 1.0
    [midi.programs]                       # program change -> patch name (beside this file, or shipped)
    1 = "acid"
    2 = "ambient"
    [osc.aliases]                         # an OSC address whose one number sets a param
    "/knob/1" = "cfg"

`load_patch(path)` -> `Patch`; `apply_patch(inst, patch, at="bar")` sets it through the Instrument's own
setters and returns the `PatchControls` (MIDI mappings, OSC aliases) for the control surfaces to install;
`PatchWatcher` reloads a file when it is saved.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

from .control.midi import PARAM_DOMAINS, CCMapping, NoteMapping, program_map_from_dict
from .control.osc import check_aliases
from .files import Refused, read_small
from .model.samplers import SamplerSettings
from .stream import StreamParams

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "patches"

MAX_PATCH_BYTES = 1 << 20  # a patch is a page of text; anything bigger is the wrong file
_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")

TABLES: dict[str, frozenset[str]] = {
    "": frozenset({"name", "description", "model", "prompts", "sampler", "play", "midi", "osc"}),
    "sampler": frozenset({"sampler", "steps", "cfg", "cfg_pp"}),
    "play": frozenset({"gain", "bpm", "seed", "eject_frames"}),
    "midi": frozenset({"cc", "notes", "programs"}),
    "osc": frozenset({"aliases"}),
}


class PatchError(ValueError):
    """A patch that cannot be used; `problems` lists each one ("line 4: [sampler].steps: ...")."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, list(problems)
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        super().__init__(f"{source}: {shown}")


@dataclass(frozen=True)
class PatchControls:
    """What a patch asks of the control surfaces: the MIDI server installs cc/notes/programs, the OSC server
    the aliases. Programs map to patch files already resolved (program -> path)."""

    cc: tuple[CCMapping, ...] = ()
    notes: tuple[NoteMapping, ...] = ()
    programs: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    osc_aliases: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Patch:
    """A validated patch. None (or empty prompts) means "leave the instrument's value as it is"."""

    name: str
    description: str = ""
    model: str | None = None
    prompts: tuple[tuple[str, float], ...] = ()
    sampler: str | None = None
    steps: int | None = None
    cfg: float | None = None
    cfg_pp: float | str | None = None  # a CFG++ lambda, or "off"
    gain: float | None = None
    bpm: float | None = None
    seed: int | None = None
    eject_frames: int | None = None
    controls: PatchControls = field(default_factory=PatchControls)
    source: Path | None = field(default=None, compare=False)
    digest: str = field(default="", compare=False)  # sha256 of the file's bytes (the watcher's baseline)


# --- finding patch files ---------------------------------------------------------------------------------


def patch_dirs() -> list[Path]:
    """Where a patch name is looked up: ./patches first (the performer's own), then the shipped ones."""
    dirs = [Path.cwd() / "patches", SHIPPED_DIR]
    return [
        d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in {x.resolve() for x in dirs[:i]}
    ]


def available_patches() -> list[str]:
    return sorted({p.stem for d in patch_dirs() for p in d.glob("*.toml")})


def find_patch(ref: str | Path, base_dir: Path | None = None) -> Path:
    """A patch file from a path or a name ("acid" -> patches/acid.toml); ValueError naming what exists."""
    if not isinstance(ref, str | Path) or not str(ref).strip():
        raise ValueError(f"a patch is a file path or a patch name, got {ref!r}")
    path = Path(ref).expanduser()
    is_name = len(path.parts) == 1 and not path.is_file()
    if is_name:  # "acid" or "acid.toml": beside the referring patch, then ./patches, then the shipped ones
        dirs = ([base_dir] if base_dir is not None else []) + patch_dirs()
        file = path.name if path.suffix == ".toml" else f"{path.name}.toml"
        candidates = [d / file for d in dirs]
    else:
        candidates = [base_dir / path] if base_dir is not None and not path.is_absolute() else []
        candidates.append(path)
    for c in candidates:
        if c.is_file():
            return c
    if not is_name:
        raise ValueError(f"patch file not found: {ref}")
    names = available_patches()
    raise ValueError(f"no patch named {str(ref)!r} (available: {', '.join(names) or 'none'})")


# --- parsing and validation ------------------------------------------------------------------------------


def load_patch(ref: str | Path) -> Patch:
    """Read and validate a whole patch file (a path or a name under patches/); PatchError if anything is off.
    Its size is checked before it is read."""
    path = find_patch(ref)
    try:
        data = read_small(path, MAX_PATCH_BYTES, "a patch")
    except (Refused, OSError) as e:
        why = str(e) if isinstance(e, Refused) else f"cannot read the file ({e.strerror or e})"
        raise PatchError(path.name, [why]) from None
    return parse_patch(data, path)


PATCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def load_named_patch(name: str, dirs: list[Path] | None = None) -> Patch:
    """The patch called `name` ("acid" or "acid.toml") in `dirs` (default: `patch_dirs()`), for a remote
    client: a plain name, never a path; a regular file in the directory itself (no symbolic link), its size
    checked before it is read. Errors name the patch, never anything outside those directories."""
    if not isinstance(name, str) or not PATCH_NAME.fullmatch(name):
        raise ValueError(
            "a patch is asked for by name (letters, digits, '-', '_', '.'; no folders): "
            f"{name[:60]!r} is not one"
            if isinstance(name, str)
            else f"a patch name is a string, got {name!r}"
        )
    file = name if name.endswith(".toml") else f"{name}.toml"
    dirs = patch_dirs() if dirs is None else [Path(d) for d in dirs]
    for d in dirs:
        try:
            dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            data = read_small(file, MAX_PATCH_BYTES, "a patch", follow=False, dir_fd=dir_fd)
        except FileNotFoundError:
            continue
        except (Refused, OSError) as e:
            raise PatchError(file, [str(e) if isinstance(e, Refused) else "cannot be read"]) from None
        finally:
            os.close(dir_fd)
        return parse_patch(data, d / file)
    names = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml")})
    raise ValueError(f"no patch named {name!r} (available: {', '.join(names) or 'none'})")


def parse_patch(data: bytes | str, path: Path | None = None) -> Patch:
    """Validate patch text; `path` names it in messages and anchors relative model/program references."""
    source = path.name if path is not None else "<patch>"
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_PATCH_BYTES:
        raise PatchError(source, [f"{len(raw)} bytes is too large for a patch (at most {MAX_PATCH_BYTES})"])
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise PatchError(source, [f"line {line}: not UTF-8 text (byte {e.start})"]) from None
    if tomllib is None:
        raise PatchError(source, ["reading patches needs Python 3.11 or newer (tomllib)"])
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_POS.search(msg)
        where = f"line {m[1]}, column {m[2]}: " if m else ""
        raise PatchError(source, [f"{where}invalid TOML: {_TOML_POS.sub('', msg)}"]) from None
    if not doc:  # an empty save (an editor truncating the file first) is not a patch that sets nothing
        raise PatchError(source, ["the file is empty (a patch sets at least one thing)"])
    v = _Validator(text, path)
    patch = v.patch(doc, digest)
    if v.problems:
        ordered = [p for _, _, p in sorted(zip(v.lines, range(len(v.problems)), v.problems))]
        raise PatchError(source, ordered)
    return patch


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _key(k: str) -> str:
    return (
        k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else '"' + k.replace("\\", "\\\\").replace('"', '\\"') + '"'
    )


def _reason(e: Exception, key: str) -> str:
    """The checking class's message without its leading parameter name ("steps must be..." -> "must be...")."""
    msg = str(e).splitlines()[0]
    return msg[len(key) + 1 :] if msg.startswith(key + " ") else msg


class _Validator:
    """Walks the parsed document, collecting every problem with where it is."""

    def __init__(self, text: str, path: Path | None) -> None:
        self.text, self.path = text, path
        self.base = path.parent if path is not None else None
        self.problems: list[str] = []
        self.lines: list[int] = []  # each problem's line, to report them in file order

    def bad(
        self, table: str, key: str | None, msg: str, index: int | None = None, line: int | None = None
    ) -> None:
        """Record a problem at `[table].key` (or entry `index` of the array of tables `[[table]]`)."""
        if index is not None:
            where = f"[[{table}]] #{index + 1}"
        else:
            where = f"[{table}]" if table else ""
        if key is not None:
            where = f"{where}.{_key(key)}" if where else _key(key)
        line = line or _locate(self.text, table, key, index)
        self.lines.append(line or 1 << 30)
        prefix = f"line {line}: " if line else ""
        self.problems.append(f"{prefix}{where}: {msg}" if where else f"{prefix}{msg}")

    def table(self, doc: dict, name: str) -> dict:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            self.bad("", name, f"must be a table, got {type(value).__name__}")
            return {}
        return value

    def unknown(self, table: dict, name: str) -> None:
        for k, value in table.items():
            if k not in TABLES[name]:
                known = ", ".join(sorted(TABLES[name]))
                what = "table" if isinstance(value, dict | list) else "key"
                where = f"[{name}]" if name else "the top level"
                self.bad(name, k, f"unknown {what} in {where} (known: {known})")

    def patch(self, doc: dict, digest: str) -> Patch:
        self.unknown(doc, "")
        kw: dict[str, Any] = {}
        for key in ("name", "description"):
            if key in doc:
                if isinstance(doc[key], str):
                    kw[key] = doc[key]
                else:
                    self.bad("", key, f"must be a string, got {type(doc[key]).__name__}")
        kw.setdefault("name", self.path.stem if self.path is not None else "patch")
        if "model" in doc:
            kw["model"] = self.model(doc["model"])
        kw["prompts"] = self.prompts(doc)
        kw.update(self.sampler(self.table(doc, "sampler")))
        kw.update(self.play(self.table(doc, "play")))
        kw["controls"] = self.controls(self.table(doc, "midi"), self.table(doc, "osc"))
        return Patch(**kw, source=self.path, digest=digest)

    def model(self, ref: Any) -> str | None:
        from .model.bundle import PRESETS

        if not isinstance(ref, str) or not ref:
            self.bad("", "model", f"must be a preset name or a checkpoint path, got {ref!r}")
            return None
        if ref in PRESETS:
            return ref
        path = Path(ref).expanduser()
        if not path.is_absolute() and self.base is not None:
            path = self.base / path
        if not path.is_file():
            self.bad("", "model", f"no preset ({', '.join(PRESETS)}) or checkpoint file named {ref!r}")
            return None
        return str(path.resolve())

    def prompts(self, doc: dict) -> tuple[tuple[str, float], ...]:
        if "prompts" not in doc:
            return ()
        table = self.table(doc, "prompts")
        if not table:
            if isinstance(doc["prompts"], dict):
                self.bad("prompts", None, 'needs at least one "text" = weight')
            return ()
        out = []
        for text, w in table.items():
            if not _is_number(w):
                self.bad("prompts", text, f"weight must be a number, got {w!r}")
                continue
            try:
                StreamParams(prompts=((text, w), ("", 1.0)))  # the stream's own rule for one weight
            except ValueError as e:
                self.bad("prompts", text, str(e))
                continue
            out.append((text, float(w)))
        if len(out) == len(table):
            try:
                StreamParams(prompts=tuple(out))
            except ValueError as e:
                self.bad("prompts", None, str(e))
        return tuple(out)

    def sampler(self, t: dict) -> dict:
        self.unknown(t, "sampler")
        out: dict[str, Any] = {}
        checks = {
            "sampler": lambda x: isinstance(x, str),
            "steps": lambda x: isinstance(x, int) and not isinstance(x, bool),
            "cfg": _is_number,
            "cfg_pp": lambda x: _is_number(x) or x == "off",
        }
        kinds = {
            "sampler": "a string",
            "steps": "an integer",
            "cfg": "a number",
            "cfg_pp": 'a number or "off"',
        }
        for key, ok in checks.items():
            if key not in t:
                continue
            x = t[key]
            if not ok(x):
                self.bad("sampler", key, f"must be {kinds[key]}, got {x!r}")
                continue
            try:  # the sampler's own ranges, so a patch can never hold what the instrument refuses
                SamplerSettings(**{key: None if x == "off" else x})
            except ValueError as e:
                self.bad("sampler", key, _reason(e, key))
                continue
            out[key] = float(x) if key == "cfg" or (key == "cfg_pp" and x != "off") else x
        return out

    def play(self, t: dict) -> dict:
        self.unknown(t, "play")
        out: dict[str, Any] = {}
        for key in ("gain", "bpm"):  # the ranges the Instrument's setters enforce
            if key in t:
                x = t[key]
                lo, hi, _ = PARAM_DOMAINS[key]
                if not _is_number(x):
                    self.bad("play", key, f"must be a number, got {x!r}")
                elif not (math.isfinite(x) and lo <= x <= hi):
                    self.bad("play", key, f"must be in {lo:g}..{hi:g}, got {x!r}")
                else:
                    out[key] = float(x)
        if "seed" in t:
            x = t["seed"]
            if isinstance(x, int) and not isinstance(x, bool):
                out["seed"] = x
            else:
                self.bad("play", "seed", f"must be an integer, got {x!r}")
        if "eject_frames" in t:
            x = t["eject_frames"]
            if not isinstance(x, int) or isinstance(x, bool):
                self.bad("play", "eject_frames", f"must be an integer, got {x!r}")
            else:
                try:
                    StreamParams(eject_frames=x)
                    out["eject_frames"] = x
                except ValueError as e:
                    self.bad("play", "eject_frames", _reason(e, "eject_frames"))
        return out

    def controls(self, midi: dict, osc: dict) -> PatchControls:
        self.unknown(midi, "midi")
        self.unknown(osc, "osc")
        cc = self.mappings(midi, "cc", CCMapping)
        notes = self.mappings(midi, "notes", NoteMapping)
        programs: dict[int, Path] = {}
        if "programs" in midi:
            try:
                names = program_map_from_dict(midi["programs"])
            except ValueError as e:
                self.bad("midi.programs", None, str(e))
                names = {}
            for n, name in names.items():
                try:
                    programs[n] = find_patch(name, self.base)
                except ValueError as e:
                    self.bad("midi.programs", str(n), str(e))
        aliases: dict[str, str] = {}
        if "aliases" in osc:
            table = osc["aliases"]
            if not isinstance(table, dict):
                self.bad("osc", "aliases", f"must be a table, got {type(table).__name__}")
                table = {}
            for address, param in table.items():
                try:  # the OSC server's own check, so every alias a patch holds can be installed
                    aliases.update(check_aliases({address: param}))
                except ValueError as e:
                    self.bad("osc.aliases", address, str(e))
        return PatchControls(tuple(cc), tuple(notes), MappingProxyType(programs), MappingProxyType(aliases))

    def mappings(self, midi: dict, key: str, cls) -> list:
        if key not in midi:
            return []
        entries = midi[key]
        if not isinstance(entries, list):
            self.bad(
                "midi", key, f"must be an array of tables ([[midi.{key}]]), got {type(entries).__name__}"
            )
            return []
        out = []
        for i, entry in enumerate(entries):
            try:
                out.append(cls.from_dict(entry))
            except ValueError as e:
                # the mapping's messages start with the key at fault ("cc must be ...", "param: ..."): point at it
                word = re.match(r"[A-Za-z_]+", str(e))
                at = word[0] if word and isinstance(entry, dict) and word[0] in entry else None
                line = _locate(self.text, f"midi.{key}", at, i) if at else None
                self.bad(f"midi.{key}", None, str(e), index=i, line=line)
        return out


# --- where a problem is in the file ----------------------------------------------------------------------


_HEADER = re.compile(r"^\s*(\[\[?)([^\[\]]+)\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(r"""^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


def _toml_key(token: str) -> str | None:
    try:
        (k,) = tomllib.loads(f"{token} = 0").keys()
        return k
    except Exception:
        return None


def _header_path(inner: str) -> str | None:
    """'midi . "cc"' -> 'midi.cc' (the dotted path of a table header's name)."""
    try:
        d: Any = tomllib.loads(f"[{inner}]")
    except Exception:
        return None
    parts = []
    while isinstance(d, dict) and len(d) == 1:
        name = next(iter(d))
        parts.append(name)
        d = d[name]
    return ".".join(parts)


def _locate(text: str, table: str, key: str | None, index: int | None) -> int | None:
    """Best effort: the line of `key` in `table` (the index-th of an array of tables), else the table's header.

    tomllib reports positions only for syntax errors, so semantic errors are placed by re-reading the lines.
    """
    if tomllib is None:
        return None
    current, count, header_line = "", {}, None
    for n, line in enumerate(text.splitlines(), 1):
        h = _HEADER.match(line)
        if h:
            name = _header_path(h[2])
            current = name if name is not None else "\0"
            i = None
            if h[1] == "[[":
                i = count.get(current, 0)
                count[current] = i + 1
            if current == table and i == index:
                header_line = n
                if key is None:
                    return n
            if key is not None and current == f"{table}.{key}".lstrip("."):
                return n  # the key is a table of its own ([sampler.extra], [[foo]])
            continue
        if key is None:
            continue
        k = _KEYLINE.match(line)
        if k and current == table and (index is None or count.get(current, 0) - 1 == index):
            if _toml_key(k[1]) == key:
                return n
    return header_line


# --- applying --------------------------------------------------------------------------------------------


def _model_mismatch(inst, want: str) -> str | None:
    """Why the instrument's model is not the patch's, or None when it is."""
    from .model.bundle import PRESETS

    playing = inst.model.name
    ref = str(getattr(inst.engine, "model_ref", "") or "")
    if want in PRESETS:
        same = playing == want and not Path(ref).is_file()
    else:
        same = Path(ref).is_file() and Path(ref).resolve() == Path(want).resolve()
        if not same:
            from .model.checkpoint import load_checkpoint_config

            try:
                same = load_checkpoint_config(want).get("name", Path(want).stem) == playing
            except (ValueError, OSError):
                same = False
    if same:
        return None
    return (
        f"the patch is for model {Path(want).name!r} but the instrument plays {playing!r}; swapping models "
        f"live is not supported yet (restart with --model {want})"
    )


def _current(inst) -> dict[str, Any]:
    return {
        "prompts": inst.prompts(),
        "sampler": inst.sampler(),
        "steps": inst.steps(),
        "cfg": inst.cfg(),
        "cfg_pp": inst.cfg_pp(),
        "seed": inst.seed(),
        "gain": inst.gain(),
        "bpm": inst.bpm(),
        "eject_frames": inst._params.eject_frames,
    }


def _set_eject(inst, frames: int | None, at: Any) -> None:
    setter = getattr(inst, "eject_frames", None)
    if callable(setter):
        setter(frames, at)
    else:  # no public setter yet: the same snapshot path the other setters use
        inst._set(replace(inst._params, eject_frames=frames), at)


def _set_all(inst, values: dict[str, Any], at: Any) -> None:
    """Through the Instrument's setters, in an order where none undoes another (cfg turns CFG++ off, so it
    goes first; bpm last, so the change lands on the grid the performer hears now)."""
    if "eject_frames" in values:
        _set_eject(inst, values["eject_frames"], at)
    if values.get("prompts"):
        inst.prompts(dict(values["prompts"]), at)
    for key in ("sampler", "steps", "cfg"):
        if values.get(key) is not None:
            getattr(inst, key)(values[key], at)
    if "cfg_pp" in values:
        inst.cfg_pp("off" if values["cfg_pp"] is None else values["cfg_pp"], at)
    for key in ("seed", "gain"):
        if values.get(key) is not None:
            getattr(inst, key)(values[key], at)
    if values.get("bpm") is not None:
        inst.bpm(values["bpm"])


def apply_patch(inst, patch: Patch, at: Any = "bar") -> PatchControls:
    """Set `patch` on a playing Instrument, all of it heard from the same block (`at`), or none of it.

    Returns the patch's MIDI mappings and OSC aliases for the control surfaces to install.
    """
    from .instrument import _check_at

    source = patch.source.name if patch.source is not None else patch.name
    try:
        at = _check_at(at)
    except ValueError as e:
        raise PatchError(source, [str(e)]) from None
    if patch.model is not None:
        why = _model_mismatch(inst, patch.model)
        if why:
            raise PatchError(source, [f"model: {why}"])
    values: dict[str, Any] = {"prompts": patch.prompts}
    for key in ("sampler", "steps", "cfg", "seed", "gain", "bpm"):
        values[key] = getattr(patch, key)
    if patch.cfg_pp is not None:
        values["cfg_pp"] = None if patch.cfg_pp == "off" else patch.cfg_pp
    if patch.eject_frames is not None:
        values["eject_frames"] = patch.eject_frames
    before = _current(inst)
    try:
        _set_all(inst, values, at)
    except Exception:
        # every value was checked when the patch loaded, so this is a bug; put back what was there
        _set_all(inst, before, at)
        raise
    return patch.controls


# --- hot reload ------------------------------------------------------------------------------------------


class PatchWatcher:
    """Polls a patch file and hands each good new version to `on_change(patch)`.

    A daemon thread rather than an asyncio task: reading and hashing a file is blocking I/O that must not
    stall the control loop, and a thread also works from a plain script or the stock Python REPL, where no
    loop runs. Given a `loop`, callbacks run on it (`call_soon_threadsafe`), beside the other controls.

    A change is noticed from the file's mtime/size/inode, and also by re-hashing it every second (on file
    systems with coarse timestamps a quick save can keep all three). A save is judged once the file has held
    still for one interval, so a half-written file is not mistaken for a broken one. A broken save is reported to
    `on_error(message)` once (and not applied: the running patch keeps playing); the next good save applies.
    Saves that come faster than the interval are read as they come: when they stop on a broken one, the newest
    good version among them is applied (an empty file is not a good version).
    """

    def __init__(
        self,
        path: str | Path,
        on_change: Callable[[Patch], Any],
        interval: float = 0.25,
        on_error: Callable[[str], Any] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        digest: str | None = None,
    ) -> None:
        if not (isinstance(interval, int | float) and 0.01 <= interval <= 60):
            raise ValueError(f"interval must be in 0.01..60 seconds, got {interval!r}")
        self.path = Path(path)
        self.on_change, self.on_error, self.loop = on_change, on_error, loop
        self.interval = float(interval)
        self.applied = 0
        self.rejected = 0
        self.last_error: str | None = None
        self.patch: Patch | None = None
        self._digest = digest  # the content last judged (None: judge the file as it is now)
        self._good = digest  # the content of the version last handed to on_change
        self._candidate: Patch | None = None  # the newest good version seen while the file kept changing
        self._seen: tuple | None = None  # the file's (mtime, size, inode) at the last poll
        self._judged: tuple | None = None  # ... when its content was last read
        self._changed_at: float | None = None  # when the file last changed, until it is judged
        self._hashed_at = 0.0  # when its content was last read to judge it
        self._missing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PatchWatcher:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"patch-watch {self.path.name}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as e:  # never let the watcher die silently
                self._report(f"{self.path.name}: watcher error: {type(e).__name__}: {e}")
            # while saves come, look five times an interval: each one is read before the next replaces it
            self._stop.wait(self.interval / 5 if self._changed_at is not None else self.interval)

    def poll(self) -> bool:
        """One check; True when a new version was judged (applied or rejected)."""
        try:
            st = self.path.stat()
        except OSError:
            if not self._missing:
                self._missing = True
                self._report(f"{self.path.name}: the file is gone; the running patch keeps playing")
            self._seen = None
            self._changed_at = None
            return False
        self._missing = False
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        now = time.monotonic()
        if key != self._seen:  # changed since the last look: judge it once it has held still for an interval
            self._seen, self._changed_at = key, now
            self._remember_if_good(key)
            return False
        if self._changed_at is not None and now - self._changed_at < self.interval * 0.99:
            return False
        self._changed_at = None
        rehash = now - self._hashed_at >= 1.0
        if key == self._judged and not rehash:
            return False
        self._hashed_at = now
        data = self._read(key)
        if data is None:
            return False
        self._judged = key
        digest = hashlib.sha256(data).hexdigest()
        good, self._candidate = self._candidate, None
        if good is not None and good.digest in (digest, self._good):
            good = None  # the newest content is that version, or it plays already
        seen_before = digest == self._digest
        if seen_before and good is None:
            return False
        self._digest = digest
        try:
            patch = parse_patch(data, self.path)
        except PatchError as e:
            if not seen_before:
                self.rejected += 1
                then = "applying the last good save instead" if good else "the running patch keeps playing"
                self._report(f"{e} (not applied; {then})")
            if good is not None:
                self._hand(good)
            return True
        if patch.digest != self._good:
            self._hand(patch)
        return True

    def _read(self, key: tuple) -> bytes | None:
        """The file's bytes if it is still `key` after reading them (None: too big, gone, or being written)."""
        if key[1] > MAX_PATCH_BYTES:  # not a patch: say so once, never read it
            if self._digest != f"size {key[1]}":
                self._digest = f"size {key[1]}"
                self.rejected += 1
                self._report(f"{self.path.name}: {key[1]} bytes is too large for a patch; not read")
            self._judged = key
            return None
        try:
            data = read_small(self.path, MAX_PATCH_BYTES, "a patch")
            after = self.path.stat()
        except (Refused, OSError):
            return None
        if (after.st_mtime_ns, after.st_size, after.st_ino) != key:
            return None  # written to while being read: look again next time
        return data

    def _remember_if_good(self, key: tuple) -> None:
        """While saves keep coming (faster than the interval, the file never holds still), keep the newest
        version that is a good patch: if the saves stop on a broken one, that is the one to play."""
        data = self._read(key) if key[1] <= MAX_PATCH_BYTES else None
        if data is None:
            return
        try:
            self._candidate = parse_patch(data, self.path)
        except PatchError:
            pass

    def _hand(self, patch: Patch) -> None:
        self._good = patch.digest
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver, patch)
        else:
            self._deliver(patch)

    def _deliver(self, patch: Patch) -> None:
        try:
            self.on_change(patch)
        except Exception as e:  # e.g. a patch for another model: reported, the sound goes on
            self.rejected += 1
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            self._report(f"{msg} (not applied; the running patch keeps playing)")
            return
        self.applied += 1
        self.patch = patch
        self.last_error = None

    def _report(self, msg: str) -> None:
        self.last_error = msg
        if self.on_error is None:
            log.warning("%s", msg)
            return
        try:
            self.on_error(msg)
        except Exception:
            log.exception("patch watcher: on_error failed")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def watch_patch(
    inst,
    ref: str | Path,
    at: Any = "bar",
    on_load: Callable[[PatchControls], Any] | None = None,
    on_error: Callable[[str], Any] | None = None,
    interval: float = 0.25,
) -> PatchWatcher:
    """Load and apply a patch now (raising if it is bad), then re-apply it on every good save.

    Called from the REPL (inside the asyncio loop), later changes are applied on that loop, in turn with the
    performer's own lines; from a plain script they are applied from the watcher's thread.
    """
    path = find_patch(ref)
    patch = load_patch(path)
    controls = apply_patch(inst, patch, at)
    if on_load is not None:
        on_load(controls)

    def changed(p: Patch) -> None:
        c = apply_patch(inst, p, at)
        if on_load is not None:
            on_load(c)

    w = PatchWatcher(
        path, changed, interval=interval, on_error=on_error, loop=_running_loop(), digest=patch.digest
    )
    w.patch = patch
    return w.start()
