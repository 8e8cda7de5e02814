"""The OSC wire format, decoded by hand: every length checked against the bytes that are there, every
bundle's timetag kept (osc.py says why python-osc's own server is not used).
"""

from __future__ import annotations

import difflib
import struct
from dataclasses import dataclass
from typing import Any

from pythonosc.parsing import osc_types

MAX_BUNDLE_DEPTH = 8  # nested bundles deeper than this are refused (no real client nests more than 2)
MAX_MESSAGES = 256  # messages in one packet
MAX_TEXT = 1000  # characters in a prompt, a name or a path
MAX_ARG_BYTES = 4 * MAX_TEXT  # bytes without a NUL in a message: MAX_TEXT characters of UTF-8
READ_TAGS = frozenset("ifsdhbrmtTFN[]")  # the OSC type tags python-osc decodes


class Undecodable(ValueError):
    """A packet that is not OSC (or not OSC we can read): it is answered once, with address "?"."""


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
    where = clip(address, 60)
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
    """An OSC message from (type tag, value) pairs ("s", "i", "h", "f", "d"), with python-osc's writers (its
    builder parses every message it builds, which costs more than the rest of an error reply)."""
    writers = {
        "s": osc_types.write_string,
        "i": osc_types.write_int,
        "h": osc_types.write_int64,
        "f": osc_types.write_float,
        "d": osc_types.write_double,
    }
    tags = "," + "".join(tag for tag, _ in typed)
    body = b"".join(writers[tag](value) for tag, value in typed)
    return osc_types.write_string(address) + osc_types.write_string(tags) + body


def suggest(address: str, known: list[str]) -> str:
    """ "; did you mean /lmdm/cfg?" for a near miss. Only addresses of about the same length are compared,
    so a stream of random addresses costs little."""
    if len(address) > 40:
        return ""
    near = [k for k in known if abs(len(k) - len(address)) <= 2]
    best = difflib.get_close_matches(address, near, n=1, cutoff=0.75)
    return f"; did you mean {best[0]}?" if best else ""


def clip(s: str, n: int) -> str:
    s = s.replace("\x00", "")
    return s if len(s) <= n else s[: n - 1] + "…"
