"""The remote control channel's wire: OSC 1.1 packets over TCP, the shared-secret handshake, and the one
function both ends use to apply a change to an Instrument.

Why OSC over TCP and not the UDP of `osc.py`: the laptop's changes must all arrive and in order, the
channel must go through an ssh tunnel (ssh forwards TCP only), and a dropped link must be noticed. OSC 1.1
frames packets on a byte stream with SLIP (RFC 1055), an END byte before and after each packet; the
messages are the documented `/lmdm/...` address space plus the `/lmdm/remote/...` ones below.

The handshake: the host sends `/lmdm/remote/hello s:nonce s:version`; the laptop answers
`/lmdm/remote/auth s:HMAC-SHA256(secret, nonce)` (hex). Nothing else is read before a good answer, so
without the secret nobody plays the host, and the secret never crosses the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import secrets
import struct
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .osc_wire import NTP_DELTA, encode

VERSION = "1"
DEFAULT_CONTROL_PORT = 57150
SECRET_ENV = "LMDM_REMOTE_SECRET"
MIN_SECRET = 16  # characters
MAX_PACKET = 1 << 16  # bytes in one framed packet; more is a broken or hostile peer
END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD
CHANGE_KINDS = ("params", "gain", "seed", "drop", "reset")


class ProtocolError(ValueError):
    """The peer broke the framing or the handshake; the connection is closed."""


# --- framing ------------------------------------------------------------------------------------------------


def frame(packet: bytes) -> bytes:
    """One packet, SLIP-escaped between two END bytes (OSC 1.1's stream framing)."""
    body = packet.replace(bytes([ESC]), bytes([ESC, ESC_ESC])).replace(bytes([END]), bytes([ESC, ESC_END]))
    return bytes([END]) + body + bytes([END])


class Deframer:
    """Cuts a byte stream into packets; `feed` returns the complete ones. Empty frames (the END bytes that
    meet between two packets) are skipped; an escape that is not SLIP's or an oversized packet raises."""

    def __init__(self, max_packet: int = MAX_PACKET) -> None:
        self.max_packet = max_packet
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        self._buf += data
        while True:
            end = self._buf.find(END)
            if end < 0:
                if len(self._buf) > 2 * self.max_packet:
                    raise ProtocolError(f"a packet over {self.max_packet} bytes")
                return out
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if raw:
                out.append(unescape(raw, self.max_packet))


def unescape(raw: bytes, max_packet: int = MAX_PACKET) -> bytes:
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == ESC:
            if i + 1 >= len(raw) or raw[i + 1] not in (ESC_END, ESC_ESC):
                raise ProtocolError("a SLIP escape that is not END or ESC")
            out.append(END if raw[i + 1] == ESC_END else ESC)
            i += 2
        else:
            out.append(b)
            i += 1
        if len(out) > max_packet:
            raise ProtocolError(f"a packet over {max_packet} bytes")
    return bytes(out)


def bundle(timetag: float, messages: list[bytes]) -> bytes:
    """An OSC bundle of encoded messages, to be heard at system time `timetag` (0: immediately)."""
    if timetag <= 0:
        tag = struct.pack(">II", 0, 1)
    else:
        seconds = timetag + NTP_DELTA
        whole = int(seconds)
        tag = struct.pack(">II", whole, min(int((seconds - whole) * 2**32), 2**32 - 1))
    return b"#bundle\x00" + tag + b"".join(struct.pack(">i", len(m)) + m for m in messages)


# --- the secret and the handshake ---------------------------------------------------------------------------


def load_secret(path: str | Path | None = None) -> bytes:
    """The shared secret: the first line of `path`, else $LMDM_REMOTE_SECRET. At least 16 characters."""
    if path is not None:
        try:
            text = Path(path).read_text().splitlines()[0] if Path(path).stat().st_size else ""
        except OSError as e:
            raise ValueError(f"cannot read the secret file {path}: {e.strerror or e}") from None
        where = f"the secret file {path}"
    else:
        text = os.environ.get(SECRET_ENV, "")
        where = f"${SECRET_ENV}"
    text = text.strip()
    if not text:
        raise ValueError(f"no shared secret: {where} is empty (give --secret-file or set ${SECRET_ENV})")
    if len(text) < MIN_SECRET:
        raise ValueError(f"the shared secret in {where} is {len(text)} characters (at least {MIN_SECRET})")
    return text.encode()


def new_secret() -> str:
    return secrets.token_urlsafe(24)


def new_nonce() -> str:
    return secrets.token_hex(16)


def answer(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, nonce.encode(), hashlib.sha256).hexdigest()


def check_answer(secret: bytes, nonce: str, given: Any) -> bool:
    return isinstance(given, str) and hmac.compare_digest(answer(secret, nonce), given)


# --- messages -----------------------------------------------------------------------------------------------


def message(address: str, *args: Any) -> bytes:
    """An OSC message from plain Python values: str, int (64-bit), float (double)."""
    typed: list[tuple[str, Any]] = []
    for a in args:
        if isinstance(a, str):
            typed.append(("s", a))
        elif isinstance(a, bool) or not isinstance(a, int | float):
            raise TypeError(f"cannot send {type(a).__name__} over the control channel")
        elif isinstance(a, int):
            typed.append(("h", a))
        else:
            typed.append(("d", float(a)))
    return encode(address, typed)


def to_json(value: Any) -> str:
    """Compact JSON; a figure that is not finite (an rtf over nothing) goes as null, never as NaN."""
    return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)


def _finite(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def host_timetag(at: float, offset_s: float) -> float:
    """A laptop `time.monotonic()` instant as the host's system time (`offset_s`: host clock − laptop's)."""
    return at - time.monotonic() + time.time() + offset_s


# --- applying a change ----------------------------------------------------------------------------------------


def change_value(kind: str, value: Any) -> Any:
    """The JSON-ready form of an engine change's value."""
    if kind == "params":
        return value.to_dict()
    return value


def apply_change(inst: Any, kind: str, value: Any, at: str | float) -> None:
    """Apply a laptop's change to an Instrument through its public setters, so its own view (status, patch
    state) stays what it plays: the host's instrument, and the laptop's fallback model."""
    from ..live.stream import StreamParams

    if kind == "params":
        params = value if isinstance(value, StreamParams) else StreamParams.from_dict(value)
        if params.bpm is not None and params.bpm != inst.bpm():
            inst.bpm(params.bpm)  # the quantisation grid as well as the model's tempo channels
        inst.set_params(replace(params, bpm=inst.bpm()), at)
    elif kind == "gain":
        inst.gain(float(value), at)
    elif kind == "seed":
        inst.seed(int(value), at)
    elif kind == "drop":
        inst.drop_context(int(value), at)
    elif kind == "reset":
        inst.reset(at)
    else:
        raise ValueError(f"unknown change {kind!r} (one of {', '.join(CHANGE_KINDS)})")
