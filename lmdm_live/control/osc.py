"""OSC control surface: `/lmdm/...` messages from SuperCollider, Tidal, TouchOSC or a script play the
Instrument, on the same asyncio loop as the REPL.

Why not python-osc's server: its dispatcher sleeps until each bundle's timetag, which stalls the loop (and
the REPL) for every timestamped bundle Tidal or SuperCollider sends ahead of time, and its parser pads an
argument that is cut short with zeros. Here a plain `asyncio.DatagramProtocol` decodes each packet whole,
checking every length against the bytes that are there, keeps every bundle's timetag and hands it to the
Instrument as an absolute `at=` (a `time.monotonic()` instant), so the engine applies the change at the
block heard at that time; nothing ever waits.

Every message has an effect or gets exactly one `/lmdm/error s:address s:reason` reply, and changes
nothing then. A packet is decoded whole before anything in it is applied; one that cannot be decoded gets
one error with address "?". OSC only sets values: it never evaluates code.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import ipaddress
import logging
import math
import os
import socket
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pythonosc.parsing import osc_types

from ..files import Refused, create_new
from .midi import PARAM_DOMAINS, WEIGHT_PREFIX, param_kind

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 57140
DEFAULT_RECORD_DIR = Path("recordings")
MAX_BUNDLE_DEPTH = 8  # nested bundles deeper than this are refused (no real client nests more than 2)
MAX_MESSAGES = 256  # messages in one packet
MAX_AHEAD_S = 60.0  # a timetag further ahead than this is a clock mix-up, not a plan
MAX_TEXT = 1000  # characters in a prompt, a name or a path
MAX_ARG_BYTES = 4 * MAX_TEXT  # bytes without a NUL in a message: MAX_TEXT characters of UTF-8
MAX_PROMPTS = 16  # prompts in one blend
RECV_BUFFER = 1 << 20  # bytes: rides out a burst while the loop is busy elsewhere
READ_TAGS = frozenset("ifsdhbrmtTFN[]")  # the OSC type tags python-osc decodes
QUANTISERS = {"@now": "now", "@block": "block", "@beat": "beat", "@bar": "bar"}
SAMPLERS = ("euler", "pingpong")
PLAY_KEYS = ("prompt", "cfg", "cfg_pp", "steps", "gain", "seed", "sampler")  # applied in this order


class Undecodable(ValueError):
    """A packet that is not OSC (or not OSC we can read): it is answered once, with address "?"."""


class Bad(ValueError):
    """A decoded message that cannot be applied; the text is the reason sent back."""


# --- decoding ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """One message of a packet. `timetag`: the system time (time.time()) its bundle asks it to be heard at,
    0 for "immediately". `problem`: why a framed message cannot be read (it still has an address to blame)."""

    address: str
    args: tuple
    timetag: float = 0.0
    problem: str = ""


class Rgba(tuple):
    """An OSC `r` argument (red, green, blue, alpha): a colour, never a number."""


class MidiBytes(tuple):
    """An OSC `m` argument (port, status, data1, data2): a MIDI message, never a number."""


class Timetag(tuple):
    """An OSC `t` argument (NTP seconds, fraction): a time, never a number."""


NTP_DELTA = 2208988800  # seconds from 1900 (NTP time) to 1970 (system time)
_FIXED = {"i": (4, ">i"), "f": (4, ">f"), "d": (8, ">d"), "h": (8, ">q")}
_TAG_NAMES = {"i": "int", "f": "float", "d": "double", "h": "64-bit int", "s": "string", "b": "blob"}
_TAG_NAMES |= {"r": "RGBA colour", "m": "MIDI message", "t": "timetag"}


def decode(dgram: bytes) -> list[Incoming]:
    """Every message of a packet, in order, with its bundle's timetag; Undecodable if any part is not OSC.

    Every length is checked here, against the bytes that are really there: python-osc's parser pads a short
    argument with zeros, which would play a truncated `/lmdm/gain ,f` as gain 0."""
    try:
        if dgram.startswith(b"#bundle\x00"):
            if len(dgram) < 16:
                raise Undecodable("bundle header truncated")
            _whole_words(dgram)
            out: list[Incoming] = []
            _walk_bundle(dgram, 0, len(dgram), 0.0, 1, out)
            return out
        if dgram.startswith(b"/"):
            _whole_words(dgram)
            return [_message(dgram, 0.0)]
    except Undecodable:
        raise
    except Exception:  # a case missed here must still be answered in the user's terms
        raise Undecodable("it cannot be read as OSC") from None
    raise Undecodable("neither an OSC message (starts with '/') nor a bundle (starts with '#bundle')")


def _whole_words(dgram: bytes) -> None:
    if len(dgram) % 4:
        raise Undecodable("its size is not a multiple of 4 bytes (OSC pads every part to 4): cut short?")


def _timetag(dgram: bytes, i: int) -> float:
    """An NTP timetag as system time (time.time()); 0.0 for "immediately"."""
    seconds, fraction = struct.unpack_from(">II", dgram, i)
    if (seconds, fraction) == (0, 1):
        return 0.0
    return seconds - NTP_DELTA + fraction / 2**32


def _walk_bundle(dgram: bytes, start: int, end: int, outer: float, depth: int, out: list[Incoming]) -> None:
    if depth > MAX_BUNDLE_DEPTH:
        raise Undecodable(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
    if end - start < 16:
        raise Undecodable("bundle header truncated")
    tag = _timetag(dgram, start + 8) or outer  # an immediate inner bundle goes with its outer one
    i = start + 16
    while i < end:
        if end - i < 4:
            raise Undecodable("bundle element size truncated")
        (size,) = struct.unpack_from(">i", dgram, i)
        i += 4
        if size <= 0 or size % 4 or i + size > end:
            raise Undecodable(
                f"bundle element of {size} bytes with {end - i} left (sizes are multiples of 4)"
            )
        if dgram.startswith(b"#bundle\x00", i):
            _walk_bundle(dgram, i, i + size, tag, depth + 1, out)
        elif dgram.startswith(b"/", i):
            out.append(_message(dgram[i : i + size], tag))
        else:
            raise Undecodable("bundle element is neither a message nor a bundle")
        if len(out) > MAX_MESSAGES:
            raise Undecodable(f"more than {MAX_MESSAGES} messages in one packet")
        i += size


def _string(dgram: bytes, i: int, what: str) -> tuple[str, int]:
    """An OSC string at `i` (UTF-8, NUL-terminated, padded to 4) and the index after it."""
    nul = dgram.find(b"\x00", i)
    if nul < 0:
        raise Undecodable(f"{what} has no terminating NUL byte: cut short?")
    try:
        text = dgram[i:nul].decode("utf-8")
    except UnicodeDecodeError:
        raise Undecodable(f"{what} is not UTF-8 text") from None
    return text, (nul + 4) & ~3


def _message(dgram: bytes, timetag: float) -> Incoming:
    # strings are measured at C speed first, so a 60 kB string costs microseconds, not milliseconds of the loop
    runs = dgram.split(b"\x00")
    if len(runs[0]) > MAX_TEXT:
        raise Undecodable(f"an address of {len(runs[0])} bytes (at most {MAX_TEXT})")
    address, i = _string(dgram, 0, "the address")
    where = _clip(address, 60)
    longest = max(map(len, runs))
    if longest > MAX_ARG_BYTES:
        return Incoming(
            address, (), timetag, f"an argument of {longest} bytes (strings: at most {MAX_TEXT} characters)"
        )
    if i >= len(dgram):
        return Incoming(address, (), timetag)  # no type tag string: a message without arguments
    tags, i = _string(dgram, i, f"{where}: the type tag string")
    if not tags.startswith(","):
        raise Undecodable(f"{where}: the type tag string does not start with ','")
    unknown = sorted(set(tags[1:]) - READ_TAGS)
    if unknown:
        return Incoming(address, (), timetag, f"unsupported OSC type tag {unknown[0]!r}")
    args, i = _arguments(dgram, i, tags[1:], where)
    if i != len(dgram):
        raise Undecodable(f"{where}: {len(dgram) - i} bytes after its last argument")
    return Incoming(address, tuple(args), timetag)


def _arguments(dgram: bytes, i: int, tags: str, where: str) -> tuple[list, int]:
    """The arguments `tags` announce, each checked against the bytes left (arrays nest as lists)."""
    stack: list[list] = [[]]
    for n, tag in enumerate(tags, 1):
        what = f"{where}: argument {n} ({_TAG_NAMES.get(tag, tag)})"
        left = len(dgram) - i
        if tag in "TFN[]":
            value: Any = {"T": True, "F": False, "N": None}.get(tag)
            if tag == "[":
                stack.append([])
                continue
            if tag == "]":
                if len(stack) == 1:
                    raise Undecodable(f"{where}: an array closes that never opened")
                value = stack.pop()
        elif tag == "s":
            value, i = _string(dgram, i, what)
        elif tag == "b":
            if left < 4:
                raise Undecodable(f"{what} needs a 4-byte size, {left} bytes left")
            (size,) = struct.unpack_from(">i", dgram, i)
            padded = (size + 3) & ~3
            if size < 0 or padded > left - 4:
                raise Undecodable(f"{what} says {size} bytes, {left - 4} left")
            value, i = dgram[i + 4 : i + 4 + size], i + 4 + padded
        else:
            size, fmt = _FIXED.get(tag, (8 if tag == "t" else 4, ""))
            if left < size:
                raise Undecodable(f"{what} needs {size} bytes, {left} left")
            if fmt:
                (value,) = struct.unpack_from(fmt, dgram, i)
            else:
                value = {"r": Rgba, "m": MidiBytes, "t": Timetag}[tag](
                    struct.unpack_from(">II" if tag == "t" else ">4B", dgram, i)
                )
            i += size
        stack[-1].append(value)
    if len(stack) > 1:
        raise Undecodable(f"{where}: an array that never closes")
    return stack[0], i


def encode(address: str, typed: list[tuple[str, Any]]) -> bytes:
    """An OSC message from (type tag, value) pairs ("s", "i", "h", "f"), with python-osc's writers (its
    builder parses every message it builds, which costs more than the rest of an error reply)."""
    writers = {
        "s": osc_types.write_string,
        "i": osc_types.write_int,
        "h": osc_types.write_int64,
        "f": osc_types.write_float,
    }
    tags = "," + "".join(tag for tag, _ in typed)
    body = b"".join(writers[tag](value) for tag, value in typed)
    return osc_types.write_string(address) + osc_types.write_string(tags) + body


def _suggest(address: str, known: list[str]) -> str:
    """ "; did you mean /lmdm/cfg?" for a near miss. Only addresses of about the same length are compared,
    so a stream of random addresses costs little."""
    if len(address) > 40:
        return ""
    near = [k for k in known if abs(len(k) - len(address)) <= 2]
    best = difflib.get_close_matches(address, near, n=1, cutoff=0.75)
    return f"; did you mean {best[0]}?" if best else ""


# --- argument checks ----------------------------------------------------------------------------------------


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "a true/false"
    names = {int: "an int", float: "a float", str: "a string", bytes: "a blob", list: "an array"}
    names |= {Rgba: "an RGBA colour", MidiBytes: "a MIDI message", Timetag: "a timetag"}
    if v is None:
        return "a nil"
    return names.get(type(v), "a " + type(v).__name__)


def _number(v: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise Bad(f"{what} must be a number, got {_type_name(v)}")
    x = float(v)
    if not math.isfinite(x) or not lo <= x <= hi:
        raise Bad(f"{what} must be in {lo:g}..{hi:g}, got {x:g}")
    return x


def _integer(v: Any, what: str, lo: int, hi: int) -> int:
    """An int, or a float with an integral value (SuperCollider and many controllers send only floats)."""
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        got = f"{v:g}" if isinstance(v, float) else _type_name(v)
        raise Bad(f"{what} must be an integer, got {got}")
    if not lo <= v <= hi:
        raise Bad(f"{what} must be in {lo}..{hi}, got {v}")
    return v


def _text(v: Any, what: str, max_len: int = MAX_TEXT) -> str:
    if not isinstance(v, str):
        raise Bad(f"{what} must be a string, got {_type_name(v)}")
    if len(v) > max_len:
        raise Bad(f"{what} is {len(v)} characters long (at most {max_len})")
    return v


def _plain(e: BaseException) -> str:
    """An exception's first line, in the user's terms: never the name of a Python class."""
    text = str(e).strip().splitlines()
    return text[0] if text else "it could not be applied (nothing changed)"


def _clip(s: str, n: int) -> str:
    s = s.replace("\x00", "")
    return s if len(s) <= n else s[: n - 1] + "…"


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
    "/lmdm/cfg": Route("_cfg", 1, 1, "f:scale 0..20"),
    "/lmdm/cfg_pp": Route("_cfg_pp", 1, 1, 'f:lambda 0..2 | s:"off"'),
    "/lmdm/steps": Route("_steps", 1, 1, "i:steps 1..100"),
    "/lmdm/sampler": Route("_sampler", 1, 1, 's:"euler"|"pingpong"'),
    "/lmdm/seed": Route("_seed", 1, 1, "i:seed"),
    "/lmdm/drop": Route("_drop", 0, 1, "[i:frames]"),
    "/lmdm/gain": Route("_gain", 1, 1, "f:gain 0..4"),
    "/lmdm/mute": Route("_mute", 0, 0, "no arguments"),
    "/lmdm/unmute": Route("_unmute", 0, 0, "no arguments"),
    "/lmdm/hush": Route("_hush", 0, 0, "no arguments", timed=False),
    "/lmdm/reset": Route("_reset", 0, 0, "no arguments"),
    "/lmdm/bpm": Route("_bpm", 1, 1, "f:bpm 20..400", timed=False),
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


def _is_quantiser(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("@")


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
        if address in ROUTES:
            raise ValueError(f"alias {address} would take over one of the instrument's own addresses")
        try:
            param_kind(param)
        except ValueError as e:
            raise ValueError(f"alias {address}: {e}") from None
        out[address] = param
    return out


# --- the server ---------------------------------------------------------------------------------------------


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, control: OSCControl) -> None:
        self.control = control

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.control._packet(data, addr)

    def error_received(self, exc: Exception) -> None:  # e.g. a reply to a client that has gone
        self.control.last_error = f"socket: {exc}"


class OSCControl:
    """Listens for `/lmdm/...` on UDP and plays `inst` (see docs/osc.md for the address space).

    `host`: the address to listen on; the default is loopback only, anything else must be asked for.
    `allow`: client IPs or networks ("192.168.1.20", "10.0.0.0/24") that may play; others get an error.
    `patch_loader(name_or_path)`: loads a patch for /lmdm/patch (if it returns something with an
    `osc_aliases` mapping, those aliases replace the current ones).
    `aliases`: extra addresses whose first number sets a patch-mapping parameter, e.g. {"/knob/1": "cfg"}.
    `record_dir`: the one directory /lmdm/record writes under (created if missing, its parent must exist);
    `patch_dirs`: where /lmdm/patch finds a patch by name (default: ./patches, then the shipped ones).
    Counters: `received` messages (and undecodable packets), `applied`, `errors`; `last_error`.
    """

    def __init__(
        self,
        inst: Any,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        allow: list[str] | None = None,
        patch_loader: Callable[[str], Any] | None = None,
        aliases: dict[str, str] | None = None,
        record_dir: str | Path = DEFAULT_RECORD_DIR,
        patch_dirs: list[str | Path] | None = None,
    ) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be an address like 127.0.0.1, got {host!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer in 0..65535 (0: any free port), got {port!r}")
        self.inst, self.host, self.port = inst, host, port
        self.allow = [self._network(a) for a in allow] if allow is not None else None
        self.patch_loader = patch_loader
        self.record_dir = Path(record_dir)
        self.patch_dirs = [Path(d) for d in patch_dirs] if patch_dirs is not None else None
        self._aliases: dict[str, str] = {}
        self.set_aliases(aliases or {})
        self.received = self.applied = self.errors = 0
        self.last_error = ""
        self._transport: asyncio.DatagramTransport | None = None
        self._cps: float | None = None
        self.clock = None  # a control.clock.Clock: when set, /lmdm/play's cps/cycle go to it
        self._tasks: set[asyncio.Task] = set()

    @staticmethod
    def _network(entry: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            return ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            raise ValueError(f"allow entries must be IP addresses or networks, got {entry!r}") from None

    # --- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind on the running loop. OSError with one clear line when the port is taken."""
        if self._transport is not None:
            return
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(self.host, self.port)
            )
        except OSError as e:
            raise OSError(
                e.errno, f"cannot listen for OSC on {self.host}:{self.port}: {e.strerror or e}"
            ) from None
        self._transport = transport
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        except OSError:
            pass  # the system's default buffer still works
        bound = transport.get_extra_info("sockname")
        self.port = int(bound[1])
        if not self._loopback(bound[0]):
            who = "the allowed clients" if self.allow else "anyone who can reach this machine"
            log.warning(
                "OSC listens on %s:%d beyond loopback: %s can play the instrument", bound[0], self.port, who
            )

    @staticmethod
    def _loopback(host: str) -> bool:
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for task in list(self._tasks):
            task.cancel()

    @property
    def listening(self) -> bool:
        return self._transport is not None

    @property
    def address(self) -> tuple[str, int] | None:
        """The (host, port) the server is bound to (the port the system chose for port=0), or None."""
        if self._transport is None:
            return None
        bound = self._transport.get_extra_info("sockname")
        return str(bound[0]), int(bound[1])

    def set_aliases(self, aliases: dict[str, str]) -> None:
        """Replace the extra addresses: {"/knob/1": "cfg", "/fader/2": "weight:choir"}."""
        self._aliases = check_aliases(aliases)

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    # --- packets --------------------------------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        if self.allow is None:
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.allow)

    def _packet(self, data: bytes, sender: tuple) -> None:
        try:
            if not self._allowed(sender[0]):
                self.received += 1
                self._fail(sender, "?", f"client {sender[0]} is not allowed to play this instrument")
                return
            try:
                messages = decode(data)
            except Undecodable as e:
                self.received += 1
                self._fail(sender, "?", f"undecodable packet of {len(data)} bytes: {e}")
                return
            offset = time.monotonic() - time.time()  # system (NTP) time -> time.monotonic()
            for m in messages:
                self.received += 1
                try:
                    self._dispatch(m, sender, offset)
                    self.applied += 1
                except ValueError as e:  # Bad, and the Instrument's own checks
                    self._fail(sender, m.address, str(e))
                except Exception as e:  # a failing handler never stops the next message
                    self._fail(sender, m.address, _plain(e))
        except Exception as e:  # pragma: no cover - last line of defence for the loop
            self.last_error = f"{type(e).__name__}: {e}"

    def _dispatch(self, m: Incoming, sender: tuple, offset: float) -> None:
        if m.problem:
            raise Bad(m.problem)
        route = ROUTES.get(m.address)
        if route is None:
            if m.address not in self._aliases:
                raise Bad("unknown address" + _suggest(m.address, [*ROUTES, *self._aliases]))
            route = ALIAS_ROUTE
        if route.method == "_ignore":
            return
        args, quant = m.args, None
        if (
            route.timed
            and len(args) > route.lo
            and (not route.pairs or len(args) % 2)
            and _is_quantiser(args[-1])
        ):
            args, quant = args[:-1], args[-1]
        if not route.lo <= len(args) <= route.hi:
            if not route.timed and args and _is_quantiser(args[-1]):
                raise Bad(f"{m.address} takes no @ quantiser: it acts on arrival")
            kinds = ", ".join(_type_name(a).split()[-1] for a in args) or "none"
            raise Bad(f"expects {route.usage}, got {len(args)} arguments ({kinds})")
        at = self._when(m.timetag, quant, offset)
        getattr(self, route.method)(Call(m.address, args, at, sender))

    @staticmethod
    def _when(timetag: float, quant: str | None, offset: float) -> str | float:
        """A quantiser wins; else a future timetag becomes a time.monotonic() instant; else now."""
        if quant is not None:
            if quant not in QUANTISERS:
                raise Bad(f"unknown quantiser {_clip(quant, 40)!r}; use @beat, @bar, @block or @now")
            return QUANTISERS[quant]
        if timetag:
            ahead = timetag - time.time()
            if ahead > MAX_AHEAD_S:
                raise Bad(f"bundle timetag is {ahead:.3g} s ahead (at most {MAX_AHEAD_S:g} s)")
            if ahead > 0:
                return timetag + offset
        return "now"

    # --- replies --------------------------------------------------------------------------------------------

    def _fail(self, sender: tuple, address: str, reason: str) -> None:
        self.errors += 1
        address, reason = _clip(address, 200), _clip(reason, 400)
        self.last_error = f"{address}: {reason}"
        self.reply(sender, "/lmdm/error", [("s", address), ("s", reason)])

    def reply(self, sender: tuple, address: str, typed: list[tuple[str, Any]]) -> None:
        """Send `address` with (type tag, value) arguments back to `sender` through the listening socket."""
        if self._transport is None or not sender[1]:
            return
        try:
            self._transport.sendto(encode(address, typed), sender)
        except Exception as e:  # a reply that cannot go out is not the next message's problem
            self.last_error = f"reply to {sender[0]}:{sender[1]}: {e}"

    # --- handlers: each checks every argument, then calls one Instrument setter ------------------------------

    def _prompt(self, c: Call) -> None:
        before = self.inst.notices
        self.inst.prompt(_text(c.args[0], "prompt"), at=c.at)
        self._notice(c, before)

    def _notice(self, c: Call, before: int) -> None:
        """A prompt far from what the model knows plays, and its sender gets the line naming the nearest."""
        if self.inst.notices > before and self.inst.notice:
            self.reply(c.sender, "/lmdm/notice", [("s", self.inst.notice)])

    def _prompts(self, c: Call) -> None:
        if len(c.args) % 2:
            raise Bad(f"expects text/weight pairs, got {len(c.args)} arguments")
        blend: dict[str, float] = {}
        for k in range(0, len(c.args), 2):
            text = _text(c.args[k], f"argument {k + 1} (prompt)")
            if text in blend:
                raise Bad(f"prompt {_clip(text, 60)!r} appears twice")
            blend[text] = _number(
                c.args[k + 1], f"weight of {_clip(text, 60)!r}", 0.0, PARAM_DOMAINS["weight"][1]
            )
        before = self.inst.notices
        self.inst.prompts(blend, at=c.at)
        self._notice(c, before)

    def _cfg(self, c: Call) -> None:
        self.inst.cfg(_number(c.args[0], "cfg", 0.0, 20.0), at=c.at)

    def _cfg_pp(self, c: Call) -> None:
        self.inst.cfg_pp(_lambda(c.args[0]), at=c.at)

    def _steps(self, c: Call) -> None:
        self.inst.steps(_integer(c.args[0], "steps", 1, 100), at=c.at)

    def _sampler(self, c: Call) -> None:
        self.inst.sampler(_sampler_name(c.args[0]), at=c.at)

    def _seed(self, c: Call) -> None:
        self.inst.seed(_integer(c.args[0], "seed", 0, 2**63 - 1), at=c.at)

    def _drop(self, c: Call) -> None:
        limit = self.inst.model.lmdm.context_frames
        frames = _integer(c.args[0], "frames", 1, limit) if c.args else None
        self.inst.drop_context(frames, at=c.at)

    def _gain(self, c: Call) -> None:
        self.inst.gain(_number(c.args[0], "gain", 0.0, 4.0), at=c.at)

    def _mute(self, c: Call) -> None:
        self.inst.mute(at=c.at)

    def _unmute(self, c: Call) -> None:
        self.inst.unmute(at=c.at)

    def _hush(self, c: Call) -> None:
        self.inst.hush()

    def _reset(self, c: Call) -> None:
        self.inst.reset(at=c.at)

    def _bpm(self, c: Call) -> None:
        self.inst.bpm(_number(c.args[0], "bpm", 20.0, 400.0))

    def _patch(self, c: Call) -> None:
        """A patch by name from the patch directories only (read and checked here, size first), handed to
        the loader whole: a client never names a path."""
        from ..patch import load_named_patch

        ref = _text(c.args[0], "patch")
        if not ref:
            raise Bad("patch needs a name")
        if self.patch_loader is None:
            raise Bad("no patch loader")
        result = self.patch_loader(load_named_patch(ref, self.patch_dirs))
        if inspect.isawaitable(result):  # an async loader: its failure is answered when it happens
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._patch_done(t, c))
        else:
            self._install_controls(result)

    def _patch_done(self, task: asyncio.Task, c: Call) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        try:
            self._install_controls(task.result())
        except Exception as e:
            self._fail(c.sender, c.address, _plain(e))

    def _install_controls(self, result: Any) -> None:
        controls = getattr(result, "controls", result)
        aliases = getattr(controls, "osc_aliases", None)
        if isinstance(aliases, Mapping):
            self.set_aliases(dict(aliases))

    def _record(self, c: Call) -> None:
        """A new .wav file under `record_dir`, created here (O_CREAT|O_EXCL|O_NOFOLLOW, one folder at a
        time), so no name can leave the directory, follow a link or replace a file."""
        ref = _text(c.args[0], "record path")
        if not ref.lower().endswith(".wav") or ref.endswith("/"):
            raise Bad(f"record path must end in .wav, got {_clip(ref, 80)!r}")
        try:
            self.record_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise Bad(f"the recordings directory cannot be created ({e.strerror or e})") from None
        try:
            fd = create_new(self.record_dir, ref, "the record path")
        except Refused as e:
            raise Bad(f"{e}; recordings go under the recordings directory, never overwrite a file") from None
        try:
            self.inst.record(fd)
        except BaseException:
            os.close(fd)
            raise

    def _record_stop(self, c: Call) -> None:
        self.inst.stop_recording()

    def _status(self, c: Call) -> None:
        self.reply(c.sender, "/lmdm/status", status_pairs(self.inst))

    def _play(self, c: Call) -> None:
        """Tidal-style pairs. Unknown keys (Tidal's s, orbit, _id_...) are ignored so one pattern can drive
        SuperDirt too; the known ones are all checked before any is applied."""
        args = c.args
        if len(args) % 2:
            raise Bad(f"expects key/value pairs, got {len(args)} arguments")
        given: dict[str, Any] = {}
        for k in range(0, len(args), 2):
            if not isinstance(args[k], str):
                raise Bad(f"argument {k + 1} must be a key (a string), got {_type_name(args[k])}")
            given[args[k]] = args[k + 1]
        checks = {
            "prompt": lambda v: _text(v, "prompt"),
            "cfg": lambda v: _number(v, "cfg", 0.0, 20.0),
            "cfg_pp": _lambda,
            "steps": lambda v: _integer(v, "steps", 1, 100),
            "gain": lambda v: _number(v, "gain", 0.0, 4.0),
            "seed": lambda v: _integer(v, "seed", 0, 2**63 - 1),
            "sampler": _sampler_name,
        }
        values = {key: checks[key](given[key]) for key in PLAY_KEYS if key in given}
        cps = _number(given["cps"], "cps", 1e-6, 1e6) if "cps" in given else None
        if "cycle" in given:
            _number(given["cycle"], "cycle", -1e12, 1e12)
        if "delta" in given:
            _number(given["delta"], "delta", 0.0, 1e6)
        if not values and cps is None:
            keys = ", ".join(sorted(_clip(k, 30) for k in given)) or "none"
            raise Bad(f"nothing to play: no {', '.join(PLAY_KEYS)} or cps key (keys: {keys})")
        if self.clock is not None and cps is not None:  # the clock decides whether Tidal drives the tempo
            cycle = float(given["cycle"]) if "cycle" in given else None
            self.clock.tidal(cps, cycle, c.at if isinstance(c.at, float) else None)
        elif cps is not None and cps != self._cps:
            self.inst.bpm(cps_to_bpm(cps))  # Tidal: 4 beats per cycle
            self._cps = cps
        setters = {
            "prompt": self.inst.prompt,
            "cfg": self.inst.cfg,
            "cfg_pp": self.inst.cfg_pp,
            "steps": self.inst.steps,
            "gain": self.inst.gain,
            "seed": self.inst.seed,
            "sampler": self.inst.sampler,
        }
        for key, value in values.items():
            setters[key](value, at=c.at)

    def _sketch(self, c: Call) -> None:
        a = c.args
        strength = _number(a[1], "strength", 0.0, 2.0) if len(a) > 1 else 1.0
        median = _integer(a[2], "filter", 1, 31) if len(a) > 2 else 5
        self.inst.sketch(_source(a[0]), strength=strength, filter=median)

    def _sketch_off(self, c: Call) -> None:
        self.inst.sketch_off()

    def _sketch_notes(self, c: Call) -> None:
        self.inst.sketch_notes(bool(_integer(c.args[0], "on", 0, 1)))

    def _sketch_note(self, c: Call) -> None:
        self.inst.sketch_note(_integer(c.args[0], "note", 0, 127), _integer(c.args[1], "velocity", 0, 127))

    def _jam(self, c: Call) -> None:
        a = c.args
        t_f = _integer(a[1], "t_f", -4096, 4096) if len(a) > 1 else 0
        mix = _number(a[2], "mix", 0.0, 1.0) if len(a) > 2 else 0.0
        self.inst.jam(_source(a[0]), t_f=t_f, mix=mix)

    def _jam_off(self, c: Call) -> None:
        self.inst.jam_off()

    def _delay(self, c: Call) -> None:
        blocks = _integer(c.args[1], "blocks", 1, 64) if len(c.args) > 1 else 4
        self.inst.delay(_source(c.args[0]), blocks=blocks)

    def _delay_off(self, c: Call) -> None:
        self.inst.delay_off()

    def _alias(self, c: Call) -> None:
        apply_param(self.inst, self._aliases[c.address], c.args[0], c.at)


def _source(v: Any) -> str:
    text = _text(v, "source")
    if not text.strip():
        raise Bad('source must name an input: "jack", "jack:PORT", "sd", "sd:DEVICE" or a sound file')
    return text


def _lambda(v: Any) -> float | str:
    if v == "off":
        return "off"
    if isinstance(v, str):
        raise Bad(f"cfg_pp must be a number in 0..2 or 'off', got {_clip(v, 40)!r}")
    return _number(v, "cfg_pp", 0.0, 2.0)


def _sampler_name(v: Any) -> str:
    name = _text(v, "sampler")
    if name not in SAMPLERS:
        raise Bad(f"sampler must be 'euler' or 'pingpong', got {_clip(name, 40)!r}")
    return name


def cps_to_bpm(cps: float) -> float:
    """Tidal's cycles per second as bpm (4 beats a cycle), folded by octaves into the instrument's 20..400."""
    bpm = cps * 60 * 4
    while bpm > 400.0:
        bpm /= 2
    while bpm < 20.0:
        bpm *= 2
    return bpm


def apply_param(inst: Any, param: str, value: Any, at: str | float = "now") -> None:
    """Set one patch-mapping parameter ("cfg", ..., "weight:<prompt text>") from a number."""
    kind = param_kind(param)
    lo, hi, integer = PARAM_DOMAINS[kind]
    x = _number(value, param, lo, hi)
    if integer:
        x = int(round(x))  # knobs and faders send floats
    if kind == "weight":
        blend = dict(inst.prompts())
        blend[param[len(WEIGHT_PREFIX) :]] = x
        inst.prompts(blend, at=at)
    elif kind == "bpm":
        inst.bpm(x)
    elif kind == "drop":
        inst.drop_context(x, at=at)
    else:
        getattr(inst, kind)(x, at=at)


def _int_arg(v: int) -> tuple[str, int]:
    return ("i", v) if -(2**31) <= v < 2**31 else ("h", v)


def status_pairs(inst: Any) -> list[tuple[str, Any]]:
    """The /lmdm/status reply: key/value pairs of the instrument's figures."""
    st, lat = inst.status(), inst.latency()
    cfg_pp = st.get("cfg_pp")

    def f(x: Any) -> tuple[str, float]:
        return ("f", float(x) if x is not None else 0.0)

    pairs = [
        ("prompt", ("s", _clip(str(st.get("prompt") or ""), MAX_TEXT))),
        ("cfg", f(st.get("cfg"))),
        ("cfg_pp", ("s", "off") if cfg_pp is None else f(cfg_pp)),
        ("steps", _int_arg(int(st.get("steps") or 0))),
        ("sampler", ("s", str(st.get("sampler") or ""))),
        ("seed", _int_arg(int(st.get("seed") or 0))),
        ("gain", f(st.get("gain"))),
        ("bpm", f(st.get("bpm"))),
        ("x_realtime", f(st.get("x_realtime"))),
        ("underruns", _int_arg(int(st.get("underruns") or 0))),
        ("faults", _int_arg(int(st.get("faults") or 0))),
        ("latency_ms", f(lat.get("total_ms"))),
        ("ring_ms", f(st.get("ring_ms"))),
        ("blocks", _int_arg(int(st.get("blocks") or 0))),
        # the most the engine fell behind real time: near the headroom, underruns were a busy machine
        ("behind_ms_max", f(st.get("behind_ms_max"))),
    ]
    out: list[tuple[str, Any]] = []
    for key, typed in pairs:
        out += [("s", key), typed]
    return out
