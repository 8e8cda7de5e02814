"""Checking a patch file whole: every problem found, each with its line or key, before anything is used."""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..model.samplers import SamplerSettings
from .mappings import CCMapping, NoteMapping, check_aliases, program_map_from_dict
from .params import PARAM_DOMAINS, is_number
from .patch_format import MAX_PATCH_BYTES, TABLES, Patch, PatchControls, PatchError, find_patch
from .stream import StreamParams

_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")

# --- parsing and validation ------------------------------------------------------------------------------


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
        from ..model.bundle import PRESETS

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
            if not is_number(w):
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
            "cfg": is_number,
            "cfg_pp": lambda x: is_number(x) or x == "off",
            "tempo_guidance": is_number,
        }
        kinds = {
            "sampler": "a string",
            "steps": "an integer",
            "cfg": "a number",
            "cfg_pp": 'a number or "off"',
            "tempo_guidance": "a number",
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
            out[key] = float(x) if key in ("cfg", "tempo_guidance") or (key == "cfg_pp" and x != "off") else x
        return out

    def play(self, t: dict) -> dict:
        self.unknown(t, "play")
        out: dict[str, Any] = {}
        for key in ("gain", "bpm"):  # the ranges the Instrument's setters enforce
            if key in t:
                x = t[key]
                lo, hi, _ = PARAM_DOMAINS[key]
                if not is_number(x):
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
